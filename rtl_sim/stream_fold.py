"""Folded kernels in the streaming CNN design (``rtl_sim.stream``): FINN's PE/SIMD folding in this emitter.

A convolution or a Dense layer with a reuse factor R > 1 (``layer.reuse``, what the HLS project's ReuseFactor
reads too) is built by ``rtl_sim.folded.folded_layer``, the folded Dense layers' plan, weight memory and
multiply-accumulate units: a convolution's kernel is the Dense over its flattened ``k*k*c_in`` window, so each
output pixel's window vector is computed over ``C = ceil(nnz / ceil(nnz / R)) <= R`` cycles by
``ceil(nnz / R)`` units, only the nonzero kernel weights stored. Every layer at R = 1: the design is
``emit_stream_verilog``'s fully parallel one, unchanged.

Pace. The design takes a pixel every ``P`` cycles: ``P`` is the slowest convolution's ``C`` (and, for a Dense
after the stream, which computes once per image, ``ceil(C / pixels)``). A free-running phase counter ``ph``
(0 .. P-1) sets it: ``in_ready`` is high at phase 0, and a pixel is taken on ``in_valid && in_ready``. Each
window stage's inputs then all arrive at one phase (the input's, plus the latencies of the stages before it,
modulo P), and its idle 'tail' ticks of 'same' padding are held to that phase too, so a stage ticks at most
every P cycles and a folded kernel (C <= P) finishes its window before the next one. Back to back, an image
takes ``P * pixels`` cycles: the design's II (cycles per image).

Window. A folded kernel reads its window during the C cycles after the tick that completes it, when the delay
line has already taken that tick's pixel: it reads the tap of delay ``d`` one register further on (the delay
line is one pixel longer), and the padding masks come from the output position registered at that tick.
The kernel's output pixel is registered ``C + 3`` cycles after the tick (``C + 2`` to the partial sums, as in
``rtl_sim.folded``, and the output register), plus the rounding registers a clock asks for.

A folded Dense stage after the stream holds its input vector (the collected image) when it arrives, and its
output register is loaded once per image, so the next folded Dense reads it without another copy.

This module depends only on the IR and ``rtl_sim``'s emitters: it never imports ``hls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from codesign.core.fixed import FixedType
from codesign.core.fold import plan_layer, stream_pace
from codesign.core.layers import Conv, Dense
from codesign.core.network import Network
from codesign.errors import BackendError
from rtl_sim.folded import MEMORY_STYLES, folded_layer, hold
from rtl_sim.verilog import Sig, _Emitter, _ident

if TYPE_CHECKING:
    from rtl_sim.stream import _Stage


def stream_reuse(net: Network) -> dict[str, int]:
    """Each convolution's and Dense layer's reuse factor (its own ``reuse``)."""
    return {l.name: int(l.reuse) for l in net.layers if isinstance(l, (Conv, Dense))}


@dataclass
class Pace:
    """The folded stream's pace (``period`` cycles per pixel), each layer's reuse and the phase wires made."""

    period: int
    reuse: dict[str, int]
    memory: str = "auto"
    slots: dict[int, str] = field(default_factory=dict)
    folds: dict[str, dict] = field(default_factory=dict)  # per folded layer: units, cycles, memory

    @property
    def folded(self) -> bool:
        return self.period > 1

    def r(self, name: str) -> int:
        return self.reuse.get(name, 1)

    def counter(self, e: _Emitter, blocks: list[str]) -> str:
        """The phase counter, ``in_ready`` and ``in_take`` (the input's valid from here on); returns its name."""
        pw = max((self.period - 1).bit_length(), 1)
        e.lines.append(f"  reg [{pw - 1}:0] ph;")
        e.lines.append(f"  assign in_ready = ph == {pw}'d0;")
        e.lines.append("  wire in_take = in_valid && in_ready;")
        blocks.append(f"  always @(posedge clk) begin\n    if (rst) ph <= {pw}'d0;\n"
                      f"    else ph <= (ph == {pw}'d{self.period - 1}) ? {pw}'d0 : ph + {pw}'d1;\n  end")
        return "in_take"

    def slot(self, e: _Emitter, phase: int) -> str | None:
        """A wire high at ``phase`` of the counter (None unfolded: every cycle is a slot)."""
        if not self.folded:
            return None
        phase %= self.period
        if phase not in self.slots:
            pw = max((self.period - 1).bit_length(), 1)
            self.slots[phase] = f"ph_at{phase}"
            e.lines.append(f"  wire ph_at{phase} = ph == {pw}'d{phase};")
        return self.slots[phase]


def make_pace(net: Network, pixels: int, memory: str = "auto") -> Pace:
    """The pace of ``net`` by its layers' own reuse factors (a graph network is refused folded)."""
    if memory not in MEMORY_STYLES:
        raise BackendError(f"weight memory style {memory!r}: use one of {', '.join(MEMORY_STYLES)}")
    reuse = stream_reuse(net)
    folded = sorted(k for k, v in reuse.items() if v > 1)
    if folded and not net.is_chain:
        raise BackendError(f"network {net.name!r}: layers {', '.join(folded)} have reuse > 1, but a branched "
                           "streaming network is built fully parallel only; set their reuse to 1")
    return Pace(stream_pace(net.layers, pixels), reuse, memory)


def folded_kernel(e: _Emitter, pace: Pace, kern: Dense, x: list[Sig], x_type: FixedType, ld: str
                  ) -> tuple[list[Sig], int, str, int]:
    """A folded kernel (or Dense) on inputs ``x`` held from the cycle after ``ld`` for its C cycles: each output's
    exact sum, its fractional bits, the signal high when they are ready and C."""
    plan = plan_layer(kern, pace.r(kern.name), [v.lo for v in x], [v.hi for v in x])
    y, frac, done = folded_layer(e, kern, plan, x, x_type, ld, pace.memory)
    pace.folds[kern.name] = {"reuse": pace.r(kern.name), "cycles": plan.cycles, "units": plan.units,
                             "nonzero": plan.nonzero, "memory_depth": plan.cycles, "memory_width": plan.word_bits}
    return y, frac, done, plan.cycles


def folded_dense_stage(e: _Emitter, blocks: list[str], si: int, st: _Stage, v_in: str, x: list[Sig], pace: Pace,
                       held: bool) -> tuple[str, list[Sig], FixedType, dict, int]:
    """A Dense stage after the stream, folded: its input held at ``v_in`` (unless ``held``: a folded Dense's output
    register), the folded layer, its rounding and element-wise layers, and its output register loaded once per
    image. The valid, the values, their type, the fold and the stage's latency."""
    from codesign.core.reference import exact_accum_type
    from rtl_sim.stream import _elementwise_timed, _reg_chain  # the stream's helpers (it imports this module)

    layer = st.layer
    name = f"D{si}_{_ident(layer.name)}"
    t = layer.result_type or layer.accum_type or exact_accum_type(layer, st.in_type)
    xs = x if held else hold(e, x, f"{name}_x", v_in)
    e.prefix = name
    y, frac, done, c = folded_kernel(e, pace, layer, xs, st.in_type, v_in)
    y, k = e.cast_all(y, frac, t, f"{name}_p")
    y, t, k2 = _elementwise_timed(e, y, t.frac, t, st.post, f"{name}_p")
    extra = k + k2
    e.prefix = ""
    load = _reg_chain(e, f"{name}_ld", done, extra, blocks) if extra else done
    y = hold(e, y, f"{name}_y", load)
    valid = _reg_chain(e, f"D{si}_v", done, 1 + extra, blocks)
    return valid, y, t, pace.folds[layer.name], c + 3 + extra
