"""A Processing algorithm generated from a job class: its parameters come from the job's specs.

``dltrainer:<kind without underscores>`` builds the job with
:meth:`JobAlgorithm.job_from_parameters`
(the same job a dialog builds from the same values), validates it and runs it in a worker
process with :class:`core.runner.WorkerRun`.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
)

from ..core import job_catalog  # noqa: F401  (registers every job class)
from ..core.errors import JobCancelled, UserError, WorkerError
from ..core.jobs import Job, job_class
from ..core.outputs import absolute_path  # made absolute before the job leaves this process
from ..core.params import ParamSpec, param_fields
from ..core.progress import for_job as progress_for_job
from ..core.runner import WorkerRun
from ..gui.icons import icon
from ..gui.job_dialog_support import spec_notes
from . import algorithms

FILE_IN = ("file_in", "model_in", "project_in")
FILE_OUT = ("file_out", "model_out", "project_out")
LISTS = ("str_list", "int_list", "float_list")
LAYER_OUT = ("raster_out", "vector_out")
DESTINATIONS = FILE_OUT + ("folder_out",) + LAYER_OUT
#: File endings of file outputs QGIS can open as map layers.
_MAP_SUFFIXES = (".gpkg", ".tif", ".tiff", ".shp", ".geojson")
#: Post-processors of layers loaded on completion (QGIS keeps no reference to them).
_POST_PROCESSORS: list = []
CRASH_FIX = ("The log above has the worker's last output; a crash is often a lack of memory "
             "(use a smaller batch or patch size) or a broken environment (check Deep Learning ▸ "
             "Settings).")


def algorithm_name(kind: str) -> str:
    """Processing name of a job kind: ``export_chips`` → ``exportchips``."""
    return kind.replace("_", "")


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def make_parameter(ps: ParamSpec, default: Any) -> QgsProcessingParameterDefinition:
    """The Processing parameter for one job field."""
    kind, name, label = ps.kind, ps.name, ps.label
    empty = default in (None, "", [], {})
    if kind in ("int", "float"):
        param = QgsProcessingParameterNumber(
            name, label, QgsProcessingParameterNumber.Integer if kind == "int"
            else QgsProcessingParameterNumber.Double, default, ps.optional)
        if ps.minimum is not None:
            param.setMinimum(ps.minimum)
        if ps.maximum is not None:
            param.setMaximum(ps.maximum)
    elif kind == "bool":
        param = QgsProcessingParameterBoolean(name, label, bool(default), ps.optional)
    elif kind == "enum":  # the labels are shown; the index maps back to the choice
        choices = list(ps.choices)
        index = choices.index(default) if default in choices else None
        param = QgsProcessingParameterEnum(name, label, [ps.choice_label(c) for c in choices],
                                           False, index, ps.optional)
    elif kind == "str":
        param = QgsProcessingParameterString(name, label, default, False, ps.optional or empty)
    elif kind in FILE_IN or kind == "folder_in":
        behavior = (QgsProcessingParameterFile.Folder if kind == "folder_in"
                    else QgsProcessingParameterFile.File)
        # model files are recognised by content (any name), so any file name is accepted
        flt = (f"{ps.file_filter};;All files (*)" if kind == "model_in" and ps.file_filter
               else ps.file_filter)
        param = QgsProcessingParameterFile(name, label, behavior, "", default or None,
                                           ps.optional, flt)
    elif kind in FILE_OUT:  # optional outputs are skipped unless asked for
        param = QgsProcessingParameterFileDestination(
            name, label, ps.file_filter or "All files (*.*)", default or None, ps.optional,
            not ps.optional)
    elif kind == "raster_out":  # a layer QGIS can load on completion
        param = QgsProcessingParameterRasterDestination(name, label, default or None,
                                                        ps.optional, not ps.optional)
    elif kind == "vector_out":
        param = QgsProcessingParameterVectorDestination(
            name, label, QgsProcessing.TypeVectorAnyGeometry, default or None, ps.optional,
            not ps.optional)
    elif kind == "folder_out":
        param = QgsProcessingParameterFolderDestination(name, label, default or None,
                                                        ps.optional, not ps.optional)
    elif kind == "raster_in":
        param = QgsProcessingParameterRasterLayer(name, label, default or None, ps.optional)
    elif kind in ("vector_in", "vector_or_file_in"):  # files: see checkParameterValues
        param = QgsProcessingParameterVectorLayer(
            name, label, [QgsProcessing.TypeVectorAnyGeometry], default or None, ps.optional)
    elif kind in ("raster_list", "vector_list"):
        layer_type = (QgsProcessing.TypeRaster if kind == "raster_list"
                      else QgsProcessing.TypeVectorAnyGeometry)
        param = QgsProcessingParameterMultipleLayers(name, label, layer_type, default or None,
                                                     ps.optional)
    elif kind in LISTS:
        text = ", ".join(str(v) for v in default or [])
        param = QgsProcessingParameterString(name, label, text, False, ps.optional or empty)
    elif kind == "dict":
        text = json.dumps(default) if default else ""
        param = QgsProcessingParameterString(name, label, text, False, ps.optional or empty)
    else:  # pragma: no cover - params.KINDS guards this
        raise ValueError(f"unknown parameter kind {kind!r}")
    if kind == "float":  # "0.25", not "0.250000" (QGIS shows 6 decimals by default)
        param.setMetadata({"widget_wrapper": {"decimals": float_decimals(ps, default)}})
    if ps.advanced:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    if ps.help and hasattr(param, "setHelp"):
        param.setHelp(ps.help)
    return param


class JobAlgorithm(QgsProcessingAlgorithm):
    """One job class as a Processing algorithm."""

    def __init__(self, job_cls: type[Job]) -> None:
        super().__init__()
        self.job_cls = job_cls

    @classmethod
    def for_kind(cls, kind: str) -> JobAlgorithm:
        return cls(job_class(kind))

    # -- description ---------------------------------------------------------------------------
    def createInstance(self) -> JobAlgorithm:  # noqa: N802
        return type(self)(self.job_cls)

    def name(self) -> str:
        return algorithm_name(self.job_cls.kind)

    def displayName(self) -> str:  # noqa: N802
        return self.job_cls.title or self.job_cls.kind.replace("_", " ").capitalize()

    def _class_attr(self, *names: str) -> str:
        """A string class attribute of the job (not one of its fields), or ''."""
        fields = {f.name for f in dataclasses.fields(self.job_cls)}
        for name in names:
            value = getattr(self.job_cls, name, None)
            if name not in fields and isinstance(value, str) and value:
                return value
        return ""

    def flags(self):
        """Jobs marked ``hidden`` (developer checks) stay out of the toolbox and the modeler;
        qgis_process and scripts still run them."""
        flags = super().flags()
        if getattr(self.job_cls, "hidden", False) is True:
            flags |= (QgsProcessingAlgorithm.FlagHideFromToolbox
                      | QgsProcessingAlgorithm.FlagHideFromModeler)
        return flags

    def group(self) -> str:
        """``processing_group`` (or ``group``) of the job class, else algorithms.GROUPS."""
        return self._class_attr("processing_group", "group") or algorithms.GROUPS.get(
            self.job_cls.kind, "Tools")

    def groupId(self) -> str:  # noqa: N802
        return re.sub(r"[^a-z0-9]+", "", self.group().lower())

    def shortHelpString(self) -> str:  # noqa: N802
        # the docstring's paragraphs, each joined into one line (QGIS shows every line break)
        doc = "</p><p>".join(html.escape(" ".join(p.split()))
                             for p in (inspect.getdoc(self.job_cls) or "").split("\n\n"))
        items = []
        for _f, ps in param_fields(self.job_cls):
            notes = spec_notes(ps)
            text = " ".join(filter(None, [html.escape(ps.help),
                                          f"({'; '.join(notes)})" if notes else ""]))
            if text:
                items.append(f"<dt><b>{html.escape(ps.label)}</b></dt><dd>{text}</dd>")
        return f"<p>{doc}</p>" + (f"<dl>{''.join(items)}</dl>" if items else "")

    def icon(self):
        return icon(self._class_attr("processing_icon", "icon") or "icon.svg")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        for f, ps in param_fields(self.job_cls):
            self.addParameter(make_parameter(ps, field_default(f)))
        for name in getattr(self.job_cls, "legacy_params", {}).values():
            # settings of earlier versions (Processing models saved then): hidden, still read
            legacy = QgsProcessingParameterString(name, name, optional=True)
            legacy.setFlags(legacy.flags() | QgsProcessingParameterDefinition.FlagHidden)
            self.addParameter(legacy)

    # -- parameters → job ----------------------------------------------------------------------
    def job_from_parameters(self, parameters: dict, context: QgsProcessingContext) -> Job:
        """The job these parameter values describe (the same a dialog builds from them).
        Settings of earlier versions (the job's ``legacy_params``, hidden parameters) are read
        as the setting that replaced them (``Job.upgrade_params``): old models keep working.

        Unconvertible values raise :class:`QgsProcessingException` with a sentence to fix them.
        """
        if not self.parameterDefinitions():
            self.initAlgorithm({})
        values = {}
        for f, ps in param_fields(self.job_cls):
            values[f.name] = self._value(f, ps, parameters, context)
        for field, name in getattr(self.job_cls, "legacy_params", {}).items():
            if parameters.get(name) not in (None, ""):   # the job renames it (upgrade_params)
                values[field] = str(parameters[name])
                if parameters.get("START_WEIGHTS") in (None, "", "random"):
                    values.pop("start_weights", None)   # the default must not win
        try:
            return self.job_cls.from_params(values)
        except UserError as exc:
            raise QgsProcessingException(str(exc)) from None

    def parameters_from_job(self, job: Job) -> dict:
        """Processing parameter values describing ``job`` (the inverse of
        :meth:`job_from_parameters`): enum → index, lists → comma separated, dict → JSON."""
        out = {}
        for f, ps in param_fields(self.job_cls):
            value = getattr(job, f.name)
            if ps.kind == "enum" and value in ps.choices:
                value = list(ps.choices).index(value)
            elif ps.kind in LISTS:
                value = ", ".join(str(v) for v in value or [])
            elif ps.kind == "dict":
                value = json.dumps(value) if value else ""
            out[ps.name] = value
        return out

    def _value(self, f: dataclasses.Field, ps: ParamSpec, parameters: dict,
               context: QgsProcessingContext) -> Any:
        name, kind = ps.name, ps.kind
        raw = parameters.get(name)
        default = field_default(f)
        if kind in ("int", "float"):
            if raw is None and default is None:
                return None
            if kind == "int":
                return self.parameterAsInt(parameters, name, context)
            return self.parameterAsDouble(parameters, name, context)
        if kind == "bool":
            return self.parameterAsBoolean(parameters, name, context)
        if kind == "enum":
            if isinstance(raw, str) and ps.choice_for(raw):  # the choice or its label too
                return ps.choice_for(raw)
            if raw is None and default not in ps.choices:
                return default
            index = self.parameterAsEnum(parameters, name, context)
            if not 0 <= index < len(ps.choices):
                raise QgsProcessingException(
                    f"{ps.label} ({name}) is {raw!r}: choose one of {', '.join(ps.choices)}"
                    f" (or 0 to {len(ps.choices) - 1}).")
            return ps.choices[index]
        if kind == "str":
            text = self.parameterAsString(parameters, name, context)
            return text if text or default is not None else None
        if kind in FILE_IN or kind == "folder_in":
            path = absolute_path(self.parameterAsFile(parameters, name, context))
            if kind == "project_in" and Path(path).name == "manifest.json":
                return str(Path(path).parent)  # a chips folder, chosen by its manifest
            return path
        if kind in LAYER_OUT:  # registers the layer to load when the dialog asks for it
            if raw is None and ps.optional:
                return ""
            return absolute_path(self.parameterAsOutputLayer(parameters, name, context))
        if kind in DESTINATIONS:
            return absolute_path(self.parameterAsFileOutput(parameters, name, context))
        if kind in ("raster_in", "vector_in", "vector_or_file_in"):
            layer = (self.parameterAsRasterLayer(parameters, name, context) if kind == "raster_in"
                     else self.parameterAsVectorLayer(parameters, name, context))
            if layer is not None:
                return absolute_source(layer.source())
            # the job names the missing file
            return absolute_path(raw) if isinstance(raw, str) else ""
        if kind in ("raster_list", "vector_list"):
            return [absolute_source(layer.source()) for layer in
                    self.parameterAsLayerList(parameters, name, context)]
        text = self.parameterAsString(parameters, name, context).strip()
        if kind in LISTS:
            return _parse_list(ps, text)
        if kind == "dict":
            return _parse_dict(ps, text)
        raise QgsProcessingException(f"Unknown parameter kind {kind!r}.")  # pragma: no cover

    def _normalized(self, parameters: dict) -> dict:
        """Parameters with enum choices given as text replaced by their index (for QGIS)."""
        out = dict(parameters)
        for _f, ps in param_fields(self.job_cls):
            raw = out.get(ps.name)
            if ps.kind == "enum" and isinstance(raw, str) and ps.choice_for(raw):
                out[ps.name] = ps.choices.index(ps.choice_for(raw))
        return out

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """The job's own sentences first (they name the fix), then Processing's checks."""
        try:
            problems = self.job_from_parameters(parameters, context).problems()
        except QgsProcessingException as exc:
            return False, str(exc)
        if problems:
            return False, " ".join(problems)
        parameters = self._normalized(parameters)
        files = {ps.name for _f, ps in param_fields(self.job_cls) if ps.kind == "vector_or_file_in"
                 and isinstance(parameters.get(ps.name), str)
                 and Path(absolute_path(parameters[ps.name])).is_file()}
        if not files:
            return super().checkParameterValues(parameters, context)
        # a file that is no vector layer (box annotations): the job reads and checks it itself;
        # the other parameters as QgsProcessingAlgorithm.checkParameterValues checks them
        for param in self.parameterDefinitions():
            if param.name() not in files and not param.checkValueIsAcceptable(
                    parameters.get(param.name()), context):
                return False, f"Incorrect parameter value for {param.name()}"
        return True, ""

    # -- running -------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        job = self.job_from_parameters(parameters, context).with_absolute_paths()
        problems = job.problems()
        if problems:
            raise QgsProcessingException(" ".join(problems))
        last_info = [0.0]
        overall = progress_for_job(job)

        def on_event(event: dict) -> None:
            kind = event.get("event")
            if kind == "progress":
                step, total = event.get("step", 0), event.get("total", 0)
                feedback.setProgress(overall.update(event) or 0.0)
                metrics = event.get("metrics") or {}
                now = time.monotonic()
                if metrics or step >= total or now - last_info[0] > 2:
                    last_info[0] = now
                    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in metrics.items())
                    feedback.pushInfo(f"[{event.get('phase', '')} {step}/{total}] "
                                      f"{event.get('message', '')} {text}".rstrip())
            elif kind == "log":
                if event.get("level") == "warning" and hasattr(feedback, "pushWarning"):
                    feedback.pushWarning(event.get("message", ""))
                else:
                    feedback.pushInfo(event.get("message", ""))
            elif kind == "artifact":
                feedback.pushInfo(f"Wrote {event.get('name')}: {event.get('path')}")

        run = WorkerRun(job, on_event=on_event)
        feedback.pushInfo(f"{self.displayName()}: running in {run.python}")
        try:
            result = dict(run.start().wait(feedback.isCanceled))
        except JobCancelled as exc:
            result = dict(getattr(exc, "result", None) or {})
            result["CANCELLED"] = True
            kept = [getattr(job, f.name) for f, ps in param_fields(self.job_cls)
                    if ps.kind in DESTINATIONS and getattr(job, f.name)
                    and Path(getattr(job, f.name)).exists()]
            # QGIS reports any cancelled algorithm as failed; this line says what happened
            feedback.pushWarning("Cancelled by the user; nothing failed. Finished work was kept"
                                 + (": " + ", ".join(kept) if kept else "") + ".")
        except UserError as exc:
            raise QgsProcessingException(str(exc)) from None
        except WorkerError as exc:
            if exc.details:
                feedback.reportError(exc.details[-4000:], False)
            fix = CRASH_FIX if exc.message.startswith("The worker process") else (
                "Use a smaller patch size or batch size." if "out of memory" in exc.message
                else "This is a bug or an unexpected environment problem; the log has details.")
            raise QgsProcessingException(f"{exc.message} {fix}") from None
        for f, ps in param_fields(self.job_cls):
            if ps.kind in DESTINATIONS:
                result[ps.name] = getattr(job, f.name) or None
        self.load_outputs(job, context)
        return result

    def load_outputs(self, job: Job, context: QgsProcessingContext) -> list[str]:
        """Put the job's map outputs on the map when it completes, styled as the family's
        outputs (class colours; :data:`..gui.output_layers.MAP_OUTPUTS` says which outputs of
        which job are map layers). Layer outputs (raster/vector destinations) load when the
        user asked QGIS to open them; file outputs that are map layers (boxes, grid cells,
        classified chips as a GeoPackage) load whenever they were written. Only runs that QGIS
        loads results for (the Processing dialog, ``runAndLoadResults``) show them. The paths
        that will be loaded."""
        from ..gui.output_layers import layer_uri, output_styler

        loaded = []
        for f, ps in param_fields(self.job_cls):
            path = getattr(job, f.name)
            if ps.kind not in DESTINATIONS or not path:
                continue
            styler = output_styler(job, ps.name)
            # the layer written into a GeoPackage (OUTPUT_LAYER for OUTPUT and OUTPUT_POINTS)
            layer = getattr(job, f"{f.name}_layer", None) or getattr(job, "output_layer", None)
            if ps.kind not in LAYER_OUT:
                if styler is None or not Path(path).is_file() or \
                        Path(path).suffix.lower() not in _MAP_SUFFIXES:
                    continue
                hint = (QgsProcessingUtils.LayerHint.Raster
                        if Path(path).suffix.lower() in (".tif", ".tiff")
                        else QgsProcessingUtils.LayerHint.Vector)
                path = layer_uri(path, layer)
                context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(
                    Path(path.partition("|")[0]).stem, context.project(), ps.name, hint))
            elif not context.willLoadLayerOnCompletion(path):
                continue
            elif layer and "|" not in path and path.lower().endswith(".gpkg"):
                path = self._load_layer_of(context, path, layer)
            loaded.append(path)
            if styler is not None:
                post = _Styler(styler)
                _POST_PROCESSORS[:] = _POST_PROCESSORS[-31:] + [post]
                context.layerToLoadOnCompletionDetails(path).setPostProcessor(post)
        return loaded


    @staticmethod
    def _load_layer_of(context: QgsProcessingContext, path: str, layer: str) -> str:
        """Load the layer ``layer`` of the GeoPackage ``path`` on completion instead of the
        file (QGIS would open its first layer, which may be one of the user's)."""
        uri = f"{path}|layername={layer}"
        layers = context.layersToLoadOnCompletion()
        details = layers.pop(path)
        layers[uri] = details
        context.setLayersToLoadOnCompletion(layers)
        return uri


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Applies ``style(layer)`` to an output layer once QGIS has loaded it."""

    def __init__(self, style) -> None:
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS's name
        try:
            self.style(layer)
        except Exception as exc:  # noqa: BLE001 - an unstyled layer is no reason to fail
            feedback.pushInfo(f"The layer {layer.name()} keeps the default style: {exc}")


def float_decimals(ps: ParamSpec, default: Any) -> int:
    """Decimals shown for a float parameter: the spec's, else enough for its default and
    minimum (at least 2, at most 6)."""
    if ps.decimals is not None:
        return ps.decimals

    def needed(value) -> int:
        if not isinstance(value, (int, float)) or value == 0:
            return 0
        text = f"{abs(value):.7f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0

    return max(2, min(6, max(needed(default), needed(ps.minimum))))


def absolute_source(source: str) -> str:
    """A layer source with a relative file path (``rel.gpkg|layername=x``) made absolute against
    the caller's folder; database and web sources unchanged."""
    head = source.partition("|")[0]
    return absolute_path(source) if head and os.path.exists(head) else source


def _parse_list(ps: ParamSpec, text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if ps.kind == "str_list":
        return items
    convert = int if ps.kind == "int_list" else float
    try:
        return [convert(t) for t in items]
    except ValueError:
        what = "whole numbers" if ps.kind == "int_list" else "numbers"
        raise QgsProcessingException(
            f"{ps.label} ({ps.name}) is {text!r}: write {what} separated by commas, "
            f"e.g. {'1, 2, 3' if ps.kind == 'int_list' else '0.5, 1.5'}.") from None


def _parse_dict(ps: ParamSpec, text: str) -> dict | list:
    """A per-class table in any form the help shows (:func:`core.perclass.parse_per_class`)."""
    from ..core.perclass import parse_per_class

    if not text:
        return {}
    if text[0] in "{[":     # JSON: any mapping; the job checks what its keys must be
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise QgsProcessingException(
                f"{ps.label} ({ps.name}) is not valid JSON ({exc.msg}): write an object such "
                'as {"1": 2} or the id=value form, e.g. 1=2, 3=0.5.') from None
    names = ps.name == "VALUE_CLASSES"
    try:
        return parse_per_class(text, f"{ps.label} ({ps.name})", numbers=not names)
    except UserError as exc:
        raise QgsProcessingException(str(exc)) from None
