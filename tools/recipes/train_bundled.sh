#!/usr/bin/env bash
# The recipe of the bundled models (codec/models/image, codec/models/audio): data, training, packaging.
# Every step resumes: rerun a codec step with --resume (and more --steps) to continue in a later sitting.
# Usage: bash tools/recipes/train_bundled.sh [WORK_DIR]   (default: ./work; needs root for apt-get)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-work}
R=tools/recipes
IMAGE_STEPS=${IMAGE_STEPS:-1500} AUDIO_STEPS=${AUDIO_STEPS:-1200} PRIOR_STEPS=${PRIOR_STEPS:-400}

apt-get install -y plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds ukui-wallpapers \
    festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng fluidsynth fluid-soundfont-gm \
    fortunes fortunes-min opus-tools vorbis-tools ffmpeg asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 \
    asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722
pip install -e ".[data,eval]"

python tools/make_image_corpus.py --out "$W/data/images" --crops 16
python tools/make_audio_corpus.py --out "$W/data/audio" --speech 1000 --music 150
python tools/make_recorded_speech.py --out "$W/data/audio"   # real voices, held out by speaker

codec train --modality image --data "$W/data/images/train" --out "$W/runs/image" --config $R/image.json --steps "$IMAGE_STEPS"
codec train --modality audio --data "$W/data/audio/train" --out "$W/runs/audio" --config $R/audio.json --steps "$AUDIO_STEPS"

for m in image audio; do
    codec tokenize --codec "$W/runs/$m" --data "$W/data/${m/image/images}/train" --out "$W/tokens/$m"
    codec train-prior --tokens "$W/tokens/$m" --out "$W/runs/$m/prior" --config $R/${m}_prior.json --steps "$PRIOR_STEPS"
    python tools/bundle_models.py --codec "$W/runs/$m" --prior "$W/runs/$m/prior" --name $m
done

codec eval --model image --data "$W/data/images/heldout" --out "$W/results/rd_image"
codec eval --model audio --data "$W/data/audio/heldout" --out "$W/results/rd_audio"
