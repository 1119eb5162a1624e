"""The DRF browsable API's raw-data forms pre-filled with the documented example bodies
(docs/api.md), so a PUT can be tried without typing one. (Its root page: config/api_root.py.)"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rest_framework.renderers import BrowsableAPIRenderer

if TYPE_CHECKING:  # DRF loads this renderer while rest_framework.views is being imported
    from rest_framework.request import Request
    from rest_framework.views import APIView

# The design's example request (docs/api.md): Manual, the LLM and the detector on GPU 0, the
# enrichment zoo alone on GPU 1 with a 3.4 GiB budget.
DESIGN_BODY: dict[str, Any] = {
    "strategy": "manual",
    "assignments": [
        {"service": "ai-llm", "gpu_index": 0},
        {"service": "ai-yolo26", "gpu_index": 0},
        {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5},
    ],
}
# URL name -> (method, example body) shown in that page's raw-data form.
EXAMPLE_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "api-gpu-config": ("PUT", DESIGN_BODY),
    "api-gpu-config-preview": ("POST", DESIGN_BODY),
}


class ExampleBodyBrowsableAPIRenderer(BrowsableAPIRenderer):
    """BrowsableAPIRenderer whose raw-data form starts from the page's documented example."""

    def get_raw_data_form(self, data: Any, view: APIView, method: str, request: Request) -> Any:
        form = super().get_raw_data_form(data, view, method, request)
        match = getattr(request, "resolver_match", None)
        example = EXAMPLE_BODIES.get(match.url_name if match else "")
        if form is not None and example and example[0] == method and "_content" in form.fields:
            form.fields["_content"].initial = json.dumps(example[1], indent=4)
        return form
