#!/usr/bin/env bash
# Build img2mesh's wheel, install it (not editable) into a fresh environment and run it from outside
# the source tree: --version, stages, config, and one tiny run to mesh.glb. The environment takes
# img2mesh only from the wheel; its other packages come from $VENV (a .pth line), which keeps the
# check to seconds instead of reinstalling torch. `make test` (and so CI) runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" -m pip wheel --no-deps --quiet -w "$WORK/dist" .
"$VENV/bin/python" -m venv --without-pip "$WORK/env"
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib "$VENV/bin/python" > "$(purelib "$WORK/env/bin/python")/img2mesh-dependencies.pth"
"$VENV/bin/python" -m pip --python "$WORK/env/bin/python" install --quiet --no-deps --no-index "$WORK"/dist/img2mesh-*.whl
cd "$WORK"
IMG2MESH=$WORK/env/bin/img2mesh
"$WORK/env/bin/python" -c "import img2mesh, sys; f = img2mesh.__file__; sys.exit(0 if '$WORK/env' in f else f'img2mesh imported from {f}, not from the wheel')"
"$IMG2MESH" --version
"$IMG2MESH" stages > /dev/null
"$IMG2MESH" config --preset smoke | grep -q "texture_size: 512"
"$IMG2MESH" run "$ROOT/assets/chicken.png" -o out --preset smoke --elevation 30 --device cpu -q \
    --set generate.model=tiny --set generate.random_weights=true --set generate.steps=2 \
    --set reconstruct.steps=20 --set reconstruct.rays_per_step=128 --set reconstruct.samples_per_ray=16 \
    --set reconstruct.image_size=32 --set reconstruct.hidden=64 --set reconstruct.layers=2 \
    --set mesh.resolution=40 --set mesh.texture_size=64 > /dev/null
test -s out/mesh.glb
echo "wheel check: $(ls "$WORK"/dist) installed and ran from $WORK (mesh.glb $(stat -c %s out/mesh.glb) bytes)"
