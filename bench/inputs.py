"""Generated inputs: one recipe for the benchmarks and the tests (benchmarks import no tests)."""

from __future__ import annotations


def compose_with(count: int) -> str:
    """A compose file with ``count`` GPU-managed services (every tenth takes a budget)."""
    lines = ["services:"]
    for i in range(count):
        lines += [
            f"  svc-{i:02d}:",
            f"    image: localhost/svc-{i:02d}:latest",
            "    labels:",
            f'      gpuconfig.model: "Model {i}"',
            f'      gpuconfig.vram_estimate_mb: "{200 + 37 * i}"',
            f"      gpuconfig.role: {'llm' if i == 0 else 'standard'}",
        ]
        if i % 10 == 3:
            lines.append("      gpuconfig.budget_env: VRAM_BUDGET_GB")
    return "\n".join(lines) + "\n"
