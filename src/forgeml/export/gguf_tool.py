"""llama.cpp's converter, quantizer and loader, run in a child process by `export/gguf.py`.

    python -m forgeml.export.gguf_tool convert --llama-cpp DIR --model-name NAME \
        [--pre-tokenizer smollm] MODEL_DIR OUT.gguf f16
    python -m forgeml.export.gguf_tool quantize IN.gguf OUT.gguf q4_k_m
    python -m forgeml.export.gguf_tool inspect OUT.gguf

Why a child process: the converter is a script that calls `sys.exit` on errors, puts
its own `gguf-py` first on `sys.path` and wants the model loaded once; llama.cpp's C
library aborts the whole process on a failed assertion. In a child, each of those ends
as an exit status and a log the parent turns into a clear `ForgeError`.

We never edit llama.cpp's files. `convert` imports the converter from where it was
unpacked (see toolchain.py) and adjusts two things at run time, before calling its
`main()`:

1. `Mistral4ForCausalLM` (transformers' class name for our `mistral4` checkpoints) is
   mapped to the converter's `Mistral3Model`, which already routes a `mistral4` config
   to its Mistral 4 (DeepSeek-V2-style MLA + MoE) writer; the converter only knows the
   name `Mistral3ForConditionalGeneration` for it.
2. With `--pre-tokenizer NAME`, the BPE pre-tokenizer is declared as NAME instead of
   being guessed from a hash of sample token ids. The hash can never match a vocabulary
   trained by forgeml, and the parent passes a name only after checking that the
   tokenizer's pre-tokenizer is the one llama.cpp implements under that name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# llama.cpp's own names for the file types we produce (enum llama_ftype in llama.h).
QUANT_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
MISTRAL4_ARCHITECTURE = "Mistral4ForCausalLM"


def convert(
    llama_cpp: Path,
    model_dir: Path,
    outfile: Path,
    outtype: str,
    pre: str | None,
    name: str,
    mmproj: bool = False,
) -> None:
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    from conversion import TEXT_MODEL_MAP, ModelBase
    from conversion.base import TextModel

    if MISTRAL4_ARCHITECTURE not in TEXT_MODEL_MAP:  # a newer converter may know it
        from conversion.mistral3 import Mistral3Model

        TEXT_MODEL_MAP[MISTRAL4_ARCHITECTURE] = "mistral3"
        ModelBase.register(MISTRAL4_ARCHITECTURE)(Mistral3Model)
    if pre:
        TextModel.get_vocab_base_pre = lambda self, tokenizer: pre

    if mmproj:
        _read_forgeml_pixtral_towers()
    import convert_hf_to_gguf

    sys.argv = [convert_hf_to_gguf.__file__, str(model_dir), "--outfile", str(outfile)]
    sys.argv += ["--outtype", outtype, "--model-name", name]
    sys.argv += ["--mmproj"] if mmproj else []
    convert_hf_to_gguf.main()


def _read_forgeml_pixtral_towers() -> None:
    """Two run-time adjustments for a vision-language model's mmproj file (the Pixtral
    tower and projector), found converting forgeml's VL models:

    1. The projector's `multi_modal_projector.linear_1/2` are mapped through block ids
       below the tower's layer count, so a tower of fewer than 3 layers (`tiny`: 2) has
       no name for `linear_2`: the map is built for at least 3 blocks.
    2. The mmproj needs the text embedding of `[IMG_BREAK]` (`v.token_embd.img_break`),
       read from `embed_tokens.weight`; transformers saves that tensor as
       `language_model.model.embed_tokens.weight`, which the mmproj writer skips with
       every other `language_model.` tensor. It is let through (only that row is written).
    """
    import gguf
    from conversion import base, llava

    built = base.MmprojModel.__init__

    def init(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, max(self.block_count, 3))

    base.MmprojModel.__init__ = init
    skips = llava.LlavaVisionModel.filter_tensors.__func__

    def filter_tensors(cls, item):
        return item if item[0].endswith("embed_tokens.weight") else skips(cls, item)

    llava.LlavaVisionModel.filter_tensors = classmethod(filter_tensors)


def quantize(source: Path, destination: Path, quant: str) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params.nthread = 0  # llama.cpp uses every core it may
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(destination).encode(), ctypes.byref(params)
    )
    if status != 0:
        sys.exit(f"llama_model_quantize returned {status}")


def inspect(path: Path) -> dict[str, object]:
    """Load the vocabulary and hyper-parameters as llama.cpp would (no weights): fails
    when llama.cpp does not know the architecture or the pre-tokenizer."""
    import llama_cpp

    model = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        metadata = model.metadata
        return {
            "architecture": metadata.get("general.architecture"),
            "file_type": metadata.get("general.file_type"),
            "pre_tokenizer": metadata.get("tokenizer.ggml.pre"),
            "n_vocab": model.n_vocab(),
        }
    finally:
        model.close()  # not at interpreter exit, where llama-cpp-python's cleanup fails


def inspect_mmproj(llama_cpp: Path, path: Path) -> dict[str, object]:
    """What llama.cpp's CLIP loader reads first of an mmproj file: its projector type and
    whether it holds the `[IMG_BREAK]` embedding (read with llama.cpp's own gguf-py)."""
    sys.path[:0] = [str(llama_cpp / "gguf-py")]
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str) -> object:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    return {
        "projector_type": value("clip.projector_type"),
        "has_vision_encoder": value("clip.has_vision_encoder"),
        "image_size": value("clip.vision.image_size"),
        "patch_size": value("clip.vision.patch_size"),
        "img_break": any(t.name == "v.token_embd.img_break" for t in reader.tensors),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forgeml.export.gguf_tool")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert")
    conv.add_argument("--llama-cpp", type=Path, required=True)
    conv.add_argument("--pre-tokenizer", default=None)
    conv.add_argument("--model-name", required=True, help="general.name in the GGUF")
    conv.add_argument("model_dir", type=Path)
    conv.add_argument("outfile", type=Path)
    conv.add_argument("outtype", choices=["f32", "f16", "bf16"])
    conv.add_argument("--mmproj", action="store_true", help="the vision tower's file")
    quant = commands.add_parser("quantize")
    quant.add_argument("source", type=Path)
    quant.add_argument("destination", type=Path)
    quant.add_argument("quant", choices=sorted(QUANT_FTYPES))
    look = commands.add_parser("inspect")
    look.add_argument("path", type=Path)
    look_mm = commands.add_parser("inspect-mmproj")
    look_mm.add_argument("--llama-cpp", type=Path, required=True)
    look_mm.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "convert":
        convert(
            args.llama_cpp,
            args.model_dir,
            args.outfile,
            args.outtype,
            args.pre_tokenizer,
            args.model_name,
            args.mmproj,
        )
    elif args.command == "inspect-mmproj":
        print(json.dumps(inspect_mmproj(args.llama_cpp, args.path)))
    elif args.command == "quantize":
        quantize(args.source, args.destination, args.quant)
    else:
        # The last stdout line is the parent's answer; llama.cpp logs go to stderr.
        print(json.dumps(inspect(args.path)))


if __name__ == "__main__":
    main()
