#!/usr/bin/env bash
# Train the image and audio codecs and their priors on a GPU machine lent for a few minutes (no network there).
#
#   bash tools/recipes/device_train.sh CHECKPOINT_DIR [PACK_DIR]
#
# Runs from the repository root of the working tree that travelled to the machine, with the compact corpus made
# by tools/make_device_corpus.py in $DEVICE_DATA (default .device_data) and, where the machine's Python lacks
# them, the wheels of constriction, soundfile (with cffi and pycparser) and soxr in .whl/.
# Both codecs train at once on the one GPU for 62% of $DEVICE_MINUTES (default 9), then each is tokenized and
# its prior and context model (the coder's entropy model, from the start codec's) trained side by side for 20%.
# Writes CHECKPOINT_DIR/{image,audio} (codec run directories, each with prior/ and context/ beside its weights)
# and CHECKPOINT_DIR/log.txt. With PACK_DIR, it also bundles both in fp16 (tools/bundle_models.py) and writes
# archives of at most 16 MiB each there, to bring back: image.tar (codec and prior), image_context.tar,
# audio_codec.tar, audio_prior.tar, audio_context.tar, logs.tgz; unpack them into codec/models/
# (tar -C codec/models -xf ...). A context model that fails to train is reported and left out; a codec or
# prior that fails stops the script.
#
# Environment:
#   DEVICE_MINUTES  total minutes of training (default 9)
#   DEVICE_DATA     the compact corpus (default .device_data: images/ and audio/)
#   INIT_IMAGE, INIT_AUDIO   codec to continue from: bundled name or run directory (default image / audio);
#                   "none" trains from scratch with the recipe's codec section. Its stored prior starts the new prior.
#   MODALITIES      which models to train (default "image audio")
#   DEVICE_LR       peak learning rate of the codecs (default: the recipe's)
#   DEVICE_STEPS    cap on the optimizer steps of each codec (default: the recipe's); 2 tests the script on a CPU
#   DEVICE_WORKERS  DataLoader workers of each codec run (default: the recipe's 6); 0 on a small CPU
#   DEVICE_PRIOR_CONFIG  the priors' config (default tools/recipes/prior_device.json; the network must stay the
#                   start prior's, the "train" section may shrink batches for a test on a CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
CK=${1:?usage: device_train.sh CHECKPOINT_DIR [PACK_DIR]}
PACK=${2:-}
MIN=${DEVICE_MINUTES:-9}
DATA=${DEVICE_DATA:-.device_data}
R=tools/recipes
mkdir -p "$CK"
exec > >(tee -a "$CK/log.txt") 2>&1

if ! python3 -c "import constriction, soundfile, soxr" 2>/dev/null; then
    [ -d .whl ] || { echo "device_train: missing Python packages and no .whl/ folder of wheels"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30

codec_min=$(python3 -c "print(round($MIN * 0.62, 2))")
prior_min=$(python3 -c "print(round($MIN * 0.20, 2))")
steps=${DEVICE_STEPS:+--steps $DEVICE_STEPS}
# Both codecs at once: each alone leaves most of the GPU idle.
MODALITIES=${MODALITIES:-image audio}
corpus() { [ "$1" = image ] && echo "$DATA/images" || echo "$DATA/audio"; }
for m in $MODALITIES; do
    d=$(corpus $m)
    [ -d "$d" ] || { echo "device_train: no $m corpus in $d (make_device_corpus.py)"; exit 2; }
done
for m in $MODALITIES; do
    init_var="INIT_${m^^}"
    init=${!init_var:-$m}
    init_flag=()
    [ "$init" = none ] || init_flag=(--init "$init")
    python3 -m codec train --modality $m --data "$(corpus $m)" \
        --out "$CK/$m" --config $R/${m}_device.json "${init_flag[@]}" --mixed-precision bf16 \
        --max-minutes "$codec_min" $steps ${DEVICE_LR:+--lr $DEVICE_LR} ${DEVICE_WORKERS:+--num-workers $DEVICE_WORKERS} > "$CK/train_$m.log" 2>&1 &
done
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
tail -n 3 "$CK"/train_*.log
[ $fail = 0 ] || { echo "device_train: a codec run failed (logs above)"; exit 1; }

for m in $MODALITIES; do
    init_var="INIT_${m^^}"
    init=${!init_var:-$m}
    prior_init=()  # the start codec's prior: same token layout, a far better start than random weights
    ctx_init=()
    [ "$init" = none ] || { prior_init=(--init "$init"); ctx_init=(--init "$init/context"); }
    (
        python3 -m codec tokenize --codec "$CK/$m" --data "$(corpus $m)" \
            --out "$CK/tokens_$m" || exit 1
        # The context model beside the prior; its failure leaves the bundle without one (reported below).
        python3 -m codec train-prior --context --tokens "$CK/tokens_$m" --out "$CK/$m/context" "${ctx_init[@]}" \
            --max-minutes "$prior_min" $steps > "$CK/context_$m.log" 2>&1 &
        python3 -m codec train-prior --tokens "$CK/tokens_$m" --out "$CK/$m/prior" --config "${DEVICE_PRIOR_CONFIG:-$R/prior_device.json}" \
            "${prior_init[@]}" --max-minutes "$prior_min" $steps || exit 1
        wait $! || echo "device_train: the $m context model failed (context_$m.log)"
    ) > "$CK/prior_$m.log" 2>&1 &
done
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
tail -n 2 "$CK"/prior_*.log "$CK"/context_*.log
[ $fail = 0 ] || { echo "device_train: a prior run failed (logs above)"; exit 1; }
echo "device_train: done -> $CK"

if [ -n "$PACK" ]; then
    mkdir -p "$PACK"
    B=$(mktemp -d)
    trap 'rm -rf "$B"' EXIT  # the unpacked bundles, also when a step fails
    for m in $MODALITIES; do
        ctx=()
        [ ! -f "$CK/$m/context/model.safetensors" ] || ctx=(--context "$CK/$m/context")
        python3 tools/bundle_models.py --codec "$CK/$m" --prior "$CK/$m/prior" "${ctx[@]}" --name $m --dest "$B" \
            --max-mb 1000
        [ ! -d "$B/$m/context" ] || tar -C "$B" -cf "$PACK/${m}_context.tar" $m/context
    done
    [ ! -d "$B/image" ] || tar -C "$B" -cf "$PACK/image.tar" image/config.json image/model.safetensors image/prior
    [ ! -d "$B/audio" ] || tar -C "$B" -cf "$PACK/audio_codec.tar" audio/config.json audio/model.safetensors
    [ ! -d "$B/audio" ] || tar -C "$B" -cf "$PACK/audio_prior.tar" audio/prior
    tar -C "$CK" -czf "$PACK/logs.tgz" --exclude='*.safetensors' --exclude='tokens_*' --exclude=samples .
    ls -l "$PACK"
fi
