"""The configuration API: read, preview, save, and the saved versions (one view per operation)."""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api_errors import ApiErrorSerializer
from common.apis import BoundedBodyApi, StrictSerializer
from common.parsers import (
    MAX_VERSION,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    version_number,
)
from gpuconfig import selectors
from gpuconfig.changes import config_changes
from gpuconfig.domain import (
    RECOMMENDED_STRATEGY,
    STRATEGY_DESCRIPTIONS,
    STRATEGY_LABELS,
    StrategyName,
)
from gpuconfig.services import (
    AssignmentChange,
    Draft,
    gpu_config_draft,
    gpu_config_save,
    validate_changes,
)

STRATEGY_CHOICES = [s.value for s in StrategyName]
MAX_BUDGET_GB = 2000.0  # no GPU holds 2 TB; a larger budget is a typo


class AssignmentInputSerializer(StrictSerializer):
    # Strict fields (common/parsers.py): true is not 1 GiB, "1" and 1.0 are not GPU 1.
    service = StrictCharField(min_length=1, max_length=64)
    gpu_index = StrictIntegerField(
        min_value=0, max_value=1023, allow_null=True, required=False, default=None
    )
    vram_budget_override = StrictFloatField(
        min_value=0.1,
        max_value=MAX_BUDGET_GB,
        allow_null=True,
        required=False,
        default=None,
        help_text="VRAM budget in GiB (1 GiB = 1024 MiB), handed to the service's budget "
        "variable (VRAM_BUDGET_GB); null: automatic.",
    )
    enabled = StrictBooleanField(required=False, default=True)

    def validate_vram_budget_override(self, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValidationError("Must be a finite number of GiB.")
        return value


class GpuConfigInputSerializer(StrictSerializer):
    strategy = serializers.ChoiceField(choices=STRATEGY_CHOICES)
    assignments = AssignmentInputSerializer(many=True, required=False, max_length=512)  # type: ignore[call-arg]
    version = StrictIntegerField(
        min_value=0,
        max_value=MAX_VERSION,
        required=False,
        help_text="The version you read (from GET). If someone saved since, the save gets 409.",
    )
    from_scratch = StrictBooleanField(
        required=False,
        default=False,
        help_text="true: the full re-plan, not the plan that keeps running services in place.",
    )

    def validate_version(self, value: int) -> int:
        # A version nobody has saved yet was never read: a typo or a client bug, not a
        # conflict with another user (409 would send the user to reload for nothing).
        latest = selectors.latest_version()
        newest = latest.number if latest else 0
        if value > newest:
            raise ValidationError(
                f"There is no version {value}; the newest is {newest}. "
                "Send the version you read from GET."
            )
        return value

    def validate_assignments(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [item["service"] for item in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError(
                f"Each service may appear once; repeated: {', '.join(duplicates)}"
            )
        return value


def changes_of(data: dict[str, Any]) -> list[AssignmentChange]:
    """The changes a validated GpuConfigInputSerializer body asks for."""
    return [AssignmentChange(**item) for item in data.get("assignments", [])]


def _strategies() -> list[dict[str, Any]]:
    return [
        {
            "name": s.value,
            "label": STRATEGY_LABELS[s],
            "description": STRATEGY_DESCRIPTIONS[s],
            "recommended": s == RECOMMENDED_STRATEGY,
        }
        for s in StrategyName
    ]


def draft_body(draft: Draft) -> dict[str, Any]:
    """The JSON shape shared by GET, preview and save responses."""
    rows = []
    for request in draft.requests:
        entry = draft.configuration.by_service[request.service.name]
        rows.append(
            {
                "service": request.service.name,
                "model": request.service.model,
                "vram_estimate_mb": request.service.vram_estimate_mb,
                "role": request.service.role,
                "gpu_index": entry.gpu_index,
                "pinned_gpu_index": request.pinned_gpu,
                "budget_adjustable": entry.budget_env is not None,
                "vram_budget_override": entry.vram_budget_override,
                # The documented API names for the configuration's budget fields.
                "vram_budget": entry.vram_budget_gb,
                "auto_adjusted": entry.budget_auto_adjusted,
                "enabled": entry.enabled,
            }
        )
    return {
        "version": draft.saved_version,
        "strategy": draft.strategy.value,
        "assignments": rows,
        "warnings": [w.message for w in draft.warnings],
        "warning_details": [w.as_dict() for w in draft.warnings],
        "planned_vram_mb": (
            {str(k): v for k, v in draft.evaluation.planned_vram_mb.items()}
            if draft.evaluation
            else {}
        ),
        "error": draft.error or None,
    }


def _draft_fields() -> dict[str, serializers.Field]:
    """The fields every draft answer has (fresh instances: a field binds to one serializer)."""
    return {
        "version": serializers.IntegerField(),
        "strategy": serializers.ChoiceField(choices=STRATEGY_CHOICES),
        "assignments": serializers.ListField(child=serializers.DictField()),
        "warnings": serializers.ListField(child=serializers.CharField()),
        "warning_details": serializers.ListField(child=serializers.DictField()),
        "planned_vram_mb": serializers.DictField(
            child=serializers.IntegerField(), help_text="GPU index -> MiB planned there."
        ),
        "error": serializers.CharField(allow_null=True),
    }


_draft_example = inline_serializer(
    "GpuConfig",
    fields={**_draft_fields(), "strategies": serializers.ListField(child=serializers.DictField())},
)
_preview_example = inline_serializer(
    "GpuConfigPreview",
    fields={
        **_draft_fields(),
        "changes": serializers.ListField(child=serializers.DictField()),
        "moves": serializers.ListField(
            child=serializers.CharField(),
            help_text="Running services that go to another GPU (not those placed first).",
        ),
        "placed": serializers.ListField(
            child=serializers.CharField(),
            help_text="Services that get a GPU for the first time (new, or switched on).",
        ),
        "restarts": serializers.ListField(
            child=serializers.CharField(),
            help_text="Running services whose container Apply recreates.",
        ),
        "from_scratch": serializers.BooleanField(),
        "disruption": inline_serializer(
            "PlanDisruption",
            fields={
                "moved": serializers.ListField(child=serializers.DictField()),
                "scratch_moved": serializers.ListField(child=serializers.CharField()),
                "max_utilization": serializers.FloatField(allow_null=True),
                "scratch_max_utilization": serializers.FloatField(allow_null=True),
                "tolerance": serializers.FloatField(),
                "from_scratch": serializers.BooleanField(),
                "proven": serializers.BooleanField(),
                "label": serializers.CharField(),
            },
            allow_null=True,
            help_text=(
                "Automatic strategies (null for manual and before anything is saved): the "
                "running services this plan moves, each with its reason, beside those the "
                "re-plan from scratch moves, and both highest utilizations; label reads "
                '"1 move instead of 5".'
            ),
        ),
        "optimality": inline_serializer(
            "PlanOptimality",
            fields={
                "proven": serializers.BooleanField(),
                "max_utilization": serializers.FloatField(),
                "lower_bound": serializers.FloatField(),
                "gap": serializers.FloatField(allow_null=True),
                "label": serializers.CharField(),
            },
            allow_null=True,
            help_text=(
                "Balanced only (null otherwise): whether the plan's highest utilization is "
                "the proven optimum, or else the proven lower bound and the gap to it; "
                'label reads "optimal" or "within 0.3% of optimal".'
            ),
        ),
    },
)
_save_response = inline_serializer(
    "GpuConfigSaved",
    fields={
        "success": serializers.BooleanField(),
        "warnings": serializers.ListField(child=serializers.CharField()),
        "warning_details": serializers.ListField(child=serializers.DictField()),
        "version": serializers.IntegerField(),
        "unchanged": serializers.BooleanField(
            help_text="true: the body stores what the newest version already holds, so no "
            "version was added; version is that one."
        ),
    },
)
_error = ApiErrorSerializer


class GpuConfigApi(BoundedBodyApi):
    """Current GPU assignments and available strategies (GET); save assignments (PUT)."""

    @extend_schema(responses={200: _draft_example, 503: _error})
    def get(self, request: Request) -> Response:
        draft = gpu_config_draft(replan=False)
        return Response({**draft_body(draft), "strategies": _strategies()})

    @extend_schema(
        request=GpuConfigInputSerializer,
        responses={200: _save_response, 400: _error, 403: _error, 409: _error, 500: _error},
    )
    def put(self, request: Request) -> Response:
        serializer = GpuConfigInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Refusals (400, 409, 500, 503) are answered by common.api_errors.exception_handler.
        result = gpu_config_save(
            user=request.user,
            strategy=StrategyName(data["strategy"]),
            changes=changes_of(data),
            expected_version=data.get("version"),
            only_if_changed=True,
            from_scratch=data["from_scratch"],
        )
        warnings = result.draft.warnings
        return Response(
            {
                "success": True,
                "warnings": [w.message for w in warnings],
                "warning_details": [w.as_dict() for w in warnings],
                "version": result.version.number,
                "unchanged": result.unchanged,
            }
        )


class GpuConfigPreviewApi(BoundedBodyApi):
    """What a strategy would assign, its warnings and which services would move; writes nothing."""

    @extend_schema(
        parameters=[
            OpenApiParameter("strategy", str, enum=STRATEGY_CHOICES, required=True),
            OpenApiParameter(
                "from_scratch",
                str,
                enum=["true", "false"],
                required=False,
                description="true: the full re-plan instead of keeping running services.",
            ),
        ],
        responses={200: _preview_example, 400: _error},
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("strategy", "")
        if name not in STRATEGY_CHOICES:
            raise ValidationError(
                {"strategy": [f"{name!r} is not a strategy; one of: {', '.join(STRATEGY_CHOICES)}"]}
            )
        scratch = request.query_params.get("from_scratch", "false")
        if scratch not in {"true", "false"}:
            raise ValidationError({"from_scratch": [f"{scratch!r} is not true or false"]})
        draft = gpu_config_draft(strategy=StrategyName(name), from_scratch=scratch == "true")
        return Response(_preview_body(draft))

    @extend_schema(request=GpuConfigInputSerializer, responses={200: _preview_example, 400: _error})
    def post(self, request: Request) -> Response:
        """The same body as PUT, evaluated without saving (the page re-validates with it).

        Reading a preview changes nothing, so non-staff users may ask for one too.
        """
        serializer = GpuConfigInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        draft = gpu_config_draft(
            strategy=StrategyName(data["strategy"]),
            changes=changes_of(data),
            from_scratch=data["from_scratch"],
        )
        validate_changes(changes_of(data), draft.registry, draft.gpus)
        return Response(_preview_body(draft))

    def get_permissions(self) -> list[Any]:
        return [IsAuthenticated()]


def _preview_body(draft: Draft) -> dict[str, Any]:
    return {
        **draft_body(draft),
        "changes": [c.as_dict() for c in draft.changes],
        "moves": [c.service for c in draft.changes if c.moves],
        "placed": [c.service for c in draft.changes if c.placed_first],
        "restarts": [c.service for c in draft.changes if c.restarts],
        "from_scratch": draft.from_scratch,
        "disruption": (
            draft.plan.disruption.as_dict() if draft.plan and draft.plan.disruption else None
        ),
        "optimality": (
            draft.plan.optimality.as_dict() if draft.plan and draft.plan.optimality else None
        ),
    }


_version_list = inline_serializer(
    "ConfigVersionList",
    fields={
        "versions": serializers.ListField(
            child=inline_serializer(
                "ConfigVersion",
                fields={
                    "number": serializers.IntegerField(),
                    "strategy": serializers.ChoiceField(choices=STRATEGY_CHOICES),
                    "created_at": serializers.DateTimeField(),
                    "created_by": serializers.CharField(allow_null=True),
                    "applied_at": serializers.DateTimeField(allow_null=True),
                    "assignments": serializers.DictField(child=serializers.DictField()),
                    # As stored: {"code", "message", "service", "gpu_index"} per warning.
                    "warnings": serializers.ListField(child=serializers.DictField()),
                },
            )
        ),
        # Only with ?from= and/or ?to=.
        "changes": serializers.ListField(child=serializers.DictField(), required=False),
    },
)


_VERSION_PARAMETER = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}


class ConfigVersionListApi(APIView):
    """Saved configurations, newest first; ``?from=A&to=B`` gives the difference between two."""

    @extend_schema(
        parameters=[
            # Either alone is meaningful too, so the schema allows every combination.
            OpenApiParameter(
                "from",
                _VERSION_PARAMETER,
                required=False,
                description="Compare from this version (alone: up to the newest).",
            ),
            OpenApiParameter(
                "to",
                _VERSION_PARAMETER,
                required=False,
                description="Compare up to this version (alone: from the version before it).",
            ),
        ],
        responses={200: _version_list, 400: _error},
    )
    def get(self, request: Request) -> Response:
        versions = list(selectors.version_list()[:100])
        body: dict[str, Any] = {"versions": [selectors.version_summary(v) for v in versions]}
        if "from" in request.query_params or "to" in request.query_params:
            numbers = {}
            for key in ("from", "to"):
                if key not in request.query_params:
                    continue
                number = version_number(request.query_params[key])
                if number is None:
                    raise ValidationError({key: ["A version number (digits 0-9) is required."]})
                numbers[key] = number
            if "to" not in numbers:
                numbers["to"] = versions[0].number if versions else 0
            if "from" not in numbers:
                earlier = selectors.version_list().filter(number__lt=numbers["to"]).first()
                if earlier is None:
                    raise ValidationError({"to": [f"No version before {numbers['to']}."]})
                numbers["from"] = earlier.number
            found = {
                v.number: v for v in selectors.version_list().filter(number__in=numbers.values())
            }
            missing = [k for k, n in numbers.items() if n not in found]
            if missing:
                raise ValidationError({k: [f"No version {numbers[k]}."] for k in missing})
            changes = config_changes(
                selectors.version_configuration(found[numbers["from"]]),
                selectors.version_configuration(found[numbers["to"]]),
            )
            body["changes"] = [c.as_dict() for c in changes]
        return Response(body)
