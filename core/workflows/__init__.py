"""ComfyUI workflow templates, their manifests, the registry and parameter injection."""

from core.workflows.manifest import (
    PARAMETERS,
    Bypass,
    ParamSpec,
    Target,
    Workflow,
    check_value,
    load_workflow,
)
from core.workflows.patch import even_scaled_size, job_prefix, patch, resolve_values
from core.workflows.registry import (
    BUILTIN_DIR,
    Registry,
    check_against_object_info,
    required_node_types,
)

__all__ = [
    "BUILTIN_DIR",
    "PARAMETERS",
    "Bypass",
    "ParamSpec",
    "Registry",
    "Target",
    "Workflow",
    "check_against_object_info",
    "check_value",
    "even_scaled_size",
    "job_prefix",
    "load_workflow",
    "patch",
    "required_node_types",
    "resolve_values",
]
