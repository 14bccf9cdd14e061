"""bf16 matmuls on CPU with the fp32 weights kept for re-checks (`synpref score --quantize bf16`).

CPUs with AVX512-BF16/AMX multiply bf16 about twice as fast as fp32, but bf16 noise can flip a close
decision, so the engine scores in bf16 and re-scores in fp32 the groups whose rewards come within a
margin of each other (`closest_gap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def add_bf16_weights(backbone: Any, torch: Any) -> list[Any]:
    """Give the backbone bf16 copies of its matmul weights and a switch to use them (fp32 stays, for
    re-checks); CPUs with AVX512-BF16/AMX multiply bf16 about twice as fast as fp32. A gated MLP
    (down(act(gate(x)) * up(x)): Llama, Qwen, Mistral, ...) runs wholly in bf16 on one fused
    gate+up matmul, cast once on the way in and out (its wide activations cost memory bandwidth);
    every other Linear casts its input to bf16 and its output back. Norms, attention, the residual
    stream and the reward head stay fp32 (a bf16 head would round the reward itself)."""
    import types

    bf16, linear = torch.bfloat16, torch.nn.functional.linear

    def copy(tensor: Any) -> Any:
        return None if tensor is None else tensor.detach().to(bf16)

    def linear_forward(self: Any, inputs: Any) -> Any:
        if not self.synpref_bf16:
            return linear(inputs, self.weight, self.bias)
        return linear(inputs.to(bf16), self.weight_bf16, self.bias_bf16).to(inputs.dtype)

    def gated(self: Any, inputs: Any, gate_up: Any, gate_up_bias: Any, down: Any, down_bias: Any) -> Any:
        gate, up = linear(inputs, gate_up, gate_up_bias).chunk(2, dim=-1)
        return linear(self.act_fn(gate) * up, down, down_bias)

    def mlp_forward(self: Any, inputs: Any) -> Any:
        if not self.synpref_bf16:
            return self.synpref_fp32_forward(inputs)
        return gated(self, inputs.to(bf16), *self.synpref_weights).to(inputs.dtype)

    switched, fused = [], set()
    for module in backbone.modules():
        gate, up, down = (getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj"))
        if not all(isinstance(layer, torch.nn.Linear) for layer in (gate, up, down)):
            continue
        if not callable(getattr(module, "act_fn", None)) or (gate.bias is None) != (up.bias is None):
            continue
        weights = (
            torch.cat([gate.weight, up.weight]).detach(),
            None if gate.bias is None else torch.cat([gate.bias, up.bias]).detach(),
            down.weight.detach(),
            down.bias,
        )
        probe = torch.randn(3, gate.in_features, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():  # the module really is down(act(gate(x)) * up(x))
            if not torch.allclose(module(probe), gated(module, probe, *weights), rtol=1e-4, atol=1e-5):
                continue
        module.synpref_weights = tuple(map(copy, weights))
        module.synpref_fp32_forward = module.forward
        module.forward = types.MethodType(mlp_forward, module)
        switched.append(module)
        fused.update((gate, up, down))
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear) and module not in fused:
            module.weight_bf16, module.bias_bf16 = copy(module.weight), copy(module.bias)
            module.forward = types.MethodType(linear_forward, module)
            switched.append(module)
    for module in switched:
        module.synpref_bf16 = False
    return switched


def use_bf16(linears: list[Any], enabled: bool) -> None:
    for module in linears:
        module.synpref_bf16 = enabled


def closest_gap(rewards: Sequence[float]) -> float:
    ordered = sorted(rewards)
    return min((b - a for a, b in zip(ordered, ordered[1:], strict=False)), default=math.inf)
