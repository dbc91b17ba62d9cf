"""The adaptive decoder's fused step tables (exact rewrites of ``step()``), written once
against the array API, so the torch decoder (``training/model.py``, ``fuse_for_inference``) and the
ONNX back-end (``backends/onnx.py``, from the model file's tensors at load) make the same ones:

  * ``word``  [V, 5H]  embedding x the LSTM's and sentinel gate's input weights, the word part
  * ``img_w`` [5H, E]  the same weights' image part (applied once per image in ``init_state``)
  * ``img_b`` [5H]     their biases
  * ``att``   [A]      2 x the attention's output weights (tanh(u) = 2 sigmoid(2u) - 1)
"""
from __future__ import annotations

from array_api_compat import array_namespace

FUSED_PREFIX = "fused."


def fused_prefix(decoder_prefix: str) -> str:
    """The names of a decoder's fused tables: ``fused.`` for the model's own (``decoder.*``),
    ``experts.N.fused.`` for an expert's (``experts.N.*``, ``training/adapt.py``)."""
    return FUSED_PREFIX if decoder_prefix == "decoder." else decoder_prefix + FUSED_PREFIX


def fused_tables(w: dict, prefix: str = "") -> dict:
    """``w``: the adaptive decoder's weights by their names (``prefix`` + ``embed.weight``, ...)."""
    g = lambda k: w[prefix + k]  # noqa: E731
    xp = array_namespace(g("embed.weight"))
    E = g("embed.weight").shape[1]
    w_in = xp.concat([g("lstm.weight_ih"), g("gate_x.weight")], axis=0)              # [5H, 2E]
    return {"word": xp.matmul(g("embed.weight"), xp.permute_dims(w_in[:, :E], (1, 0))),
            "img_w": xp.asarray(w_in[:, E:], copy=True),
            "img_b": xp.concat([g("lstm.bias_ih") + g("lstm.bias_hh"), g("gate_x.bias")], axis=0),
            "att": 2.0 * xp.reshape(g("att_out.weight"), (-1,))}
