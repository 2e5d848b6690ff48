#!/usr/bin/env bash
# Start the real QGIS desktop with CLIP Search installed in a separate profile and a sample raster
# loaded. Uses Xvfb when there is no screen. Usage: scripts/run_qgis.sh ENGINE_PYTHON RASTER
# CLIP_SEARCH_MODEL / CLIP_SEARCH_PRETRAINED preset the profile's model (e.g. ViT-B-32 and none);
# CLIP_SEARCH_PROFILES: the profiles folder (default build/profiles);
# scripts/qgis/startup.py documents the variables for a scripted demo, screenshot and quit.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
engine_python="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
raster="$2"
profiles="${CLIP_SEARCH_PROFILES:-$repo/build/profiles}"  # tests use their own
profile="$profiles/profiles/clip-search"  # QGIS keeps profiles in PATH/profiles/NAME
mkdir -p "$profile/python/plugins" "$profile/QGIS"
"$engine_python" "$repo/scripts/deploy_plugin.py" "$profile/python/plugins"
ini="$profile/QGIS/QGIS3.ini"
# QGIS 3.22 has no `plugins enable`: enable the plugin in the profile's settings
python3 - "$ini" "$engine_python" "${CLIP_SEARCH_MODEL:-}" "${CLIP_SEARCH_PRETRAINED:-}" <<'PY'
import configparser, sys
ini, engine, model, pretrained = sys.argv[1:5]
config = configparser.RawConfigParser()
config.optionxform = str
config.read(ini)
for section, values in {
    "PythonPlugins": {"clip_search_plugin": "true"},
    "clip_search": {"engine_python": engine, **({"model": model, "pretrained": pretrained} if model else {})},
    "qgis": {"checkVersion": "false", "showTips322": "false", "allowVersionCheck": "false"},
    "migration": {"fileVersion": "2", "settings": "true"},
}.items():
    if not config.has_section(section):
        config.add_section(section)
    for key, value in values.items():
        config.set(section, key, value)
with open(ini, "w") as f:
    config.write(f, space_around_delimiters=False)
PY
cmd=(qgis --profiles-path "$profiles" --profile clip-search --nologo --noversioncheck
     --code "$repo/scripts/qgis/startup.py" "$raster")
if [ -z "${DISPLAY:-}" ]; then
  echo "no screen: running QGIS on a virtual screen (Xvfb)"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" "${cmd[@]}"
fi
exec "${cmd[@]}"
