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
# the README's no-weights demo, as a new user runs it (tiny untrained networks; the run says it is noise)
"$IMG2MESH" run "$ROOT/assets/chicken.png" -o out --preset demo --device cpu -q --json > demo.json
test -s out/mesh.glb
grep -q '"random_weights": \[' demo.json && grep -q 'id=.random-weights.' out/report.html
echo "wheel check: $(ls "$WORK"/dist) installed and ran from $WORK (mesh.glb $(stat -c %s out/mesh.glb) bytes)"
