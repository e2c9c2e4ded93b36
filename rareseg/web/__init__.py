"""Web page and JSON API: upload a LISS-IV scene, set options, see and download the predictions."""

from rareseg.web.app import create_app, display_name, job_manager
from rareseg.web.config import WebConfig
from rareseg.web.jobs import FILES, STATUSES, Job, JobManager, JobStateError, SerialPredictor
from rareseg.web.options import RenderOptions, parse_options
from rareseg.web.render import ARGMAX_THRESHOLD, RENDERED, render_outputs, topk_outline
from rareseg.web.uploads import UploadInfo, inspect_upload, preview_shape

__all__ = [
    "ARGMAX_THRESHOLD",
    "FILES",
    "RENDERED",
    "STATUSES",
    "Job",
    "JobManager",
    "JobStateError",
    "RenderOptions",
    "SerialPredictor",
    "UploadInfo",
    "WebConfig",
    "create_app",
    "display_name",
    "inspect_upload",
    "job_manager",
    "parse_options",
    "preview_shape",
    "render_outputs",
    "topk_outline",
]
