#!/usr/bin/env bash
# Install the Debian packages nar-speech needs (corpus synthesis, phonemes, real test audio).
# Usage: bash tools/install_debian.sh        # as root: apt-get installs what is missing
# Prints nothing to do when everything is present; never touches installed packages.
set -euo pipefail
# build-essential + python3-dev: pip builds pesq (an sdist with a C extension) for the evaluation
# fluidsynth + timgm6mb-soundfont (6 MB GM soundfont): the music corpus (audio_gen.music); the
# larger FluidR3_GM (fluid-soundfont-gm, 148 MB) is optional: apt-get install fluid-soundfont-gm
# slurm-wlm + munge (4 MB): the job-split decoding test starts a one-node Slurm on localhost
pkgs=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
      sox libsox-fmt-all fortunes fortune-mod bible-kjv pocketsphinx-testdata
      build-essential python3-dev
      fluidsynth timgm6mb-soundfont
      slurm-wlm munge)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install_debian.sh: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install_debian.sh: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
