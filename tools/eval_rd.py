"""Rate-distortion evaluation: the same as ``codec eval`` (see codec/eval/rd.py for what it measures).

python tools/eval_rd.py --model image --data data/images/heldout --out bench_results/rd_image
python tools/eval_rd.py --model audio --data data/audio/heldout --out bench_results/rd_audio
"""

from codec.eval.rd import main

if __name__ == "__main__":
    raise SystemExit(main())
