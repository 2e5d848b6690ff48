#!/usr/bin/env bash
# Start the real QGIS desktop with CLIP Search installed in a separate profile and a sample raster
# loaded. Uses Xvfb when there is no screen. Usage: scripts/run_qgis.sh ENGINE_PYTHON RASTER
# CLIP_SEARCH_MODEL / CLIP_SEARCH_PRETRAINED preset the profile's model (e.g. ViT-B-32 and none);
# CLIP_SEARCH_PROFILES: the profiles folder (default build/profiles); CLIP_SEARCH_PREPARE_ONLY=1: deploy
# the plugin and write the profile's settings, without starting QGIS. ENGINE_PYTHON becomes the profile's
# engine only when it has none that exists: an engine chosen in QGIS (Settings, Set up engine) is kept.
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
# enable the plugin; set the engine Python only where the profile has none that exists (a choice made in
# QGIS survives); preset the model only when CLIP_SEARCH_MODEL is given
python3 "$repo/scripts/prepare_profile.py" "$ini" "$engine_python" "${CLIP_SEARCH_MODEL:-}" \
  "${CLIP_SEARCH_PRETRAINED:-}"
if [ "${CLIP_SEARCH_PREPARE_ONLY:-}" = "1" ]; then
  echo "profile ready in $profile (QGIS not started)"
  exit 0
fi
cmd=(qgis --profiles-path "$profiles" --profile clip-search --nologo --noversioncheck
     --code "$repo/scripts/qgis/startup.py" "$raster")
if [ -z "${DISPLAY:-}" ]; then
  echo "no screen: running QGIS on a virtual screen (Xvfb)"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" "${cmd[@]}"
fi
exec "${cmd[@]}"
