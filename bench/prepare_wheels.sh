#!/usr/bin/env bash
# Fills <checkout>/.whl/ with the wheels a GPU machine without a network lacks for vilt_lab, to be
# carried there with the checkout: bench/gpu_check.sh installs them into .site/ itself.
#
#   bash bench/prepare_wheels.sh [--with-pot]      # here, where there is a network
#
# A typical GPU image has torch, torchvision, transformers, timm, accelerate, tokenizers,
# safetensors, numpy, pillow, matplotlib, pyyaml, tqdm, filelock and pytest, but not Hydra,
# OmegaConf, WebDataset, simplejpeg or torchao; POT (exact optimal transport) is needed by the
# IPOT tests alone and is 33 MB: only with --with-pot. The wheels are for the GPU machine's Python
# (PYTHON_VERSION, default 3.12) on x86_64 Linux, not necessarily this machine's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python_version=${PYTHON_VERSION:-3.12}
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" -d .whl "$@"
}
# hydra-core 1.3 needs omegaconf < 2.4.
get hydra-core==1.3.8 omegaconf==2.3.1 webdataset braceexpand simplejpeg torchao
if [ "${1:-}" = "--with-pot" ]; then get pot; fi
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) exists only as a source archive: a pure
# Python package, so a wheel built here installs anywhere.
if ! compgen -G ".whl/antlr4_python3_runtime-4.9.3-*.whl" > /dev/null; then
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
fi
ls -la .whl
du -sh .whl
