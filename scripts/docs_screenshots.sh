#!/usr/bin/env bash
# Screenshots of the built documentation site in headless Chromium (Debian: `apt-get install chromium`):
# docs/screenshots/home.png (the home page) and docs/screenshots/smile_trainer_api.png (the SmileTrainer page at its
# API). Run `make docs` first. A fragment URL alone gives a blank headless screenshot, so the API is shot through a
# page that frames the SmileTrainer page at its anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${1:-site}
frame=$(mktemp "$SITE/screenshot-XXXXXX.html")
trap 'rm -f "$frame"' EXIT
echo '<!doctype html><body style="margin:0"><iframe src="trainer.html#smile_hf.SmileTrainer"
  style="width:1280px;height:1600px;border:0"></iframe></body>' > "$frame"
shot() {
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --no-first-run --user-data-dir="$(mktemp -d)" --hide-scrollbars --virtual-time-budget=5000 \
    --window-size=1280,1600 --screenshot="$1" "file://$PWD/$2"
}
shot docs/screenshots/home.png "$SITE/index.html"
shot docs/screenshots/smile_trainer_api.png "$frame"
