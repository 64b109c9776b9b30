"""LoRA adapters loaded into one base model, so one batch can mix them.

    adapters = LoraAdapters(model)
    adapters.load("adapter_3fa2b1c0", adapter_dir)   # PEFT weights only: A, B per layer
    model(..., adapter_names=adapters.row_names(sequences))   # through `adapters.model`

The first adapter wraps the model in a `PeftModel`, which swaps each targeted linear for
a LoRA layer *in place*: the base weights stay where they are, one copy however many
adapters load. From then on every forward goes through the wrapper with one adapter
name per row (PEFT's mixed-adapter batches): each LoRA layer runs the base linear on the
whole batch, then adds `B @ A * scale` to the rows of each adapter ("__base__" rows get
nothing). On `mistral4` every LoRA target (MLA projections, dense and shared-expert
MLPs; see MISTRAL4_LORA_TARGETS) sees activations with the batch first, so rows never
mix; the routed experts are fused 3D tensors no adapter targets.

Only the engine's worker thread may call `load` and `unload`: they rewrite the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from forgeml.core.errors import InputError
from forgeml.export.merge import adapter_settings

if TYPE_CHECKING:
    from forgeml.serve.engine.sequence import Sequence

BASE_ROW = "__base__"  # PEFT's adapter name for a row that uses no adapter


class LoraAdapters:
    def __init__(self, model: torch.nn.Module) -> None:
        self._base = model
        self._peft = None  # the PeftModel, while at least one adapter is loaded

    @property
    def model(self) -> torch.nn.Module:
        """The module to run forwards through: the PEFT wrapper once an adapter is in."""
        return self._peft if self._peft is not None else self._base

    @property
    def names(self) -> list[str]:
        return [] if self._peft is None else list(self._peft.peft_config)

    def row_names(self, sequences: list[Sequence]) -> list[str] | None:
        """Each row's adapter for PEFT's mixed batches; None while none is loaded."""
        if self._peft is None:
            return None
        return [sequence.request.adapter or BASE_ROW for sequence in sequences]

    def load(self, name: str, directory: Path) -> None:
        """Load a PEFT LoRA directory's weights under `name`, on the base model's device."""
        from peft import PeftModel

        settings = adapter_settings(directory)
        if settings.get("peft_type") != "LORA":
            raise InputError(
                f"only LoRA adapters can be served over their base, not {settings.get('peft_type')}",
                path=directory,
                hint="export it merged into its base (`forgeml export ADAPTER`) and serve that",
            )
        device = str(next(self._base.parameters()).device)
        with warnings.catch_warnings():
            # PEFT 0.21 asks transformers 5 the deprecated `is_gradient_checkpointing`.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            try:
                if self._peft is None:
                    # low_cpu_mem_usage: the LoRA weights are created empty and filled from
                    # the file, rather than randomly initialised first.
                    self._peft = PeftModel.from_pretrained(
                        self._base,
                        directory,
                        adapter_name=name,
                        is_trainable=False,
                        low_cpu_mem_usage=True,
                        torch_device=device,
                    ).eval()
                else:
                    self._peft.load_adapter(
                        directory,
                        adapter_name=name,
                        is_trainable=False,
                        low_cpu_mem_usage=True,
                        torch_device=device,
                    )
            except (ValueError, KeyError, RuntimeError) as error:
                self._undo(name)  # PEFT swaps layers in before it reads the weights
                raise InputError(
                    f"the adapter does not fit its base model: {error}", path=directory
                ) from error

    def _undo(self, name: str) -> None:
        """Take a half-loaded adapter out, so the base (and other adapters) serve as before."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._peft is not None:
            if name in self._peft.peft_config:
                self.unload(name)
            return
        # The first adapter failed inside PeftModel.from_pretrained, after its LoRA layers
        # (with empty weights) replaced the base's linears: put the linears back.
        for path, module in list(self._base.named_modules()):
            if isinstance(module, BaseTunerLayer):
                parent, _, child = path.rpartition(".")
                setattr(self._base.get_submodule(parent), child, module.get_base_layer())
        vars(self._base).pop("peft_config", None)  # PEFT's record of what it injected

    def unload(self, name: str) -> None:
        """Drop an adapter's weights; after the last one, the plain base model is back."""
        if self._peft is None or name not in self._peft.peft_config:
            return
        if len(self._peft.peft_config) == 1:
            self._base = self._peft.unload()  # LoRA layers swapped back for their base linears
            vars(self._base).pop("peft_config", None)  # PEFT's record of what it injected
            self._peft = None
            return
        with warnings.catch_warnings():
            # "Adapter X was active which is now deleted": every row names its adapter anyway.
            warnings.simplefilter("ignore", UserWarning)
            self._peft.delete_adapter(name)
