"""The one-page result for the primary-care doctor, as a secondary capture in the study.

The doctor at a township clinic opens the study in whatever viewer they have; a picture always
shows. The page holds the key image and its overlay, the findings with probabilities and
measurements, the triage priority and the guidance in Chinese and English, with the reminder
that it is an AI result a radiologist must confirm. Rendered with Pillow and Noto Sans CJK.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw
from pydicom import Dataset

from medgate import __version__
from medgate.models.findings import GuidanceStatement, Measurement
from medgate.reports.context import (
    CHARACTER_SET,
    SERIES_NUMBERS,
    BuildContext,
    model_equipment,
    models_label,
    set_body_part,
)
from medgate.reports.errors import ReportError
from medgate.reports.imaging import cjk_font, display_image, wrap
from medgate.reports.overlay import OverlayPicture

PAGE = (1240, 1754)  # A4 portrait at 150 dpi
MARGIN = 48
URGENCY_COLORS = {
    "emergency": (200, 0, 0),
    "urgent": (230, 110, 0),
    "soon": (190, 150, 0),
    "routine": (0, 110, 180),
    "none": (90, 90, 90),
}
URGENCY_WORDS = {
    "emergency": ("立即处理", "emergency"),
    "urgent": ("紧急", "urgent"),
    "soon": ("尽快", "soon"),
    "routine": ("常规", "routine"),
    "none": ("无需处理", "none"),
}
PRIORITY_COLORS = {"critical": (200, 0, 0), "urgent": (230, 110, 0), "routine": (0, 110, 180)}
TITLE = "AI 辅助阅片结果 / AI-assisted imaging result"
DISCLAIMER = (
    "AI结果，须经放射科医生确认，不能单独作为诊断依据。 "
    "AI result: to be confirmed by a radiologist; not for diagnosis on its own."
)


class _Page:
    """A cursor over the page that wraps text and stops cleanly at the bottom."""

    def __init__(self) -> None:
        self.image = Image.new("RGB", PAGE, (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.y = MARGIN
        self.bottom = PAGE[1] - MARGIN - 60
        self.full = False

    def text(
        self,
        text: str,
        size: int = 22,
        color: tuple[int, int, int] = (0, 0, 0),
        indent: int = 0,
        gap: int = 6,
    ) -> None:
        font = cjk_font(size)
        for line in wrap(text, font, PAGE[0] - 2 * MARGIN - indent):
            if self.y + size > self.bottom:
                if not self.full:
                    self.draw.text(
                        (MARGIN, self.y),
                        "… 更多内容见AI报告(SR) / more in the AI report (SR)",
                        font=cjk_font(18),
                        fill=(90, 90, 90),
                    )
                    self.full = True
                return
            self.draw.text((MARGIN + indent, self.y), line, font=font, fill=color)
            self.y += int(size * 1.35)
        self.y += gap

    def rule(self) -> None:
        self.draw.line((MARGIN, self.y, PAGE[0] - MARGIN, self.y), fill=(180, 180, 180), width=2)
        self.y += 12


def _measure_text(m: Measurement) -> str:
    unit = "" if m.unit.value == "1" else f" {m.unit.value}"
    return f"{m.name.meaning} {m.value:.3g}{unit}"


def _patient_line(ds: Dataset) -> str:
    name = str(ds.get("PatientName", "") or "-")
    parts = [
        f"患者 Patient: {name}",
        f"ID: {ds.get('PatientID', '') or '-'}",
        f"性别 Sex: {ds.get('PatientSex', '') or '-'}",
        f"出生 Born: {ds.get('PatientBirthDate', '') or '-'}",
    ]
    return "   ".join(parts)


def _study_line(ds: Dataset) -> str:
    return "   ".join(
        [
            f"检查日期 Study date: {ds.get('StudyDate', '') or '-'}",
            f"检查号 Accession: {ds.get('AccessionNumber', '') or '-'}",
            f"设备 Modality: {ds.get('Modality', '') or '-'}",
        ]
    )


def _paste_images(page: _Page, ctx: BuildContext, overlays: list[OverlayPicture]) -> None:
    if overlays:
        key_uid = overlays[0].source_uid
        overlay: Image.Image | None = overlays[0].image
    else:
        uids = list(ctx.sources)
        key_uid = uids[len(uids) // 2]
        overlay = None
    try:
        key = Image.fromarray(display_image(ctx.source(key_uid))).convert("RGB")
    except ReportError:
        key = Image.new("RGB", (512, 512), (40, 40, 40))
    box = (PAGE[0] - 2 * MARGIN - 24) // 2
    for column, (picture, caption) in enumerate(
        [(key, "关键图像 Key image"), (overlay, "AI 叠加图 AI overlay")]
    ):
        if picture is None:
            continue
        scale = box / max(picture.width, picture.height)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        fitted = picture.resize(size, Image.Resampling.LANCZOS)
        x = MARGIN + column * (box + 24) + (box - fitted.width) // 2
        page.image.paste(fitted, (x, page.y + 30))
        page.draw.text(
            (MARGIN + column * (box + 24), page.y), caption, font=cjk_font(20), fill=(60, 60, 60)
        )
    page.y += 30 + box + 16


def render_summary(
    ctx: BuildContext, guidance: list[GuidanceStatement], overlays: list[OverlayPicture]
) -> Image.Image:
    """The page as a Pillow RGB image (also what the tests save under docs/images)."""
    page = _Page()
    first = ctx.first
    page.text(TITLE, size=40, gap=4)
    page.text(DISCLAIMER, size=22, color=(200, 0, 0))
    page.text(_patient_line(first), size=20, color=(40, 40, 40), gap=0)
    page.text(_study_line(first), size=20, color=(40, 40, 40))
    triage = ctx.study.triage
    if triage is not None:
        reasons = "; ".join(triage.reasons) or "-"
        page.text(
            f"AI 分诊优先级 Triage priority: {triage.priority.upper()}  ({reasons})",
            size=26,
            color=PRIORITY_COLORS.get(triage.priority, (0, 0, 0)),
        )
    page.rule()
    _paste_images(page, ctx, overlays)
    page.rule()
    page.text("AI 发现 Findings", size=28)
    findings = [(r, f) for r in ctx.study.model_results for f in r.findings]
    if not findings:
        page.text("AI 未发现异常 / No finding reported by the AI models.", size=22, indent=16)
    for _result, finding in findings:
        state = "阳性 present" if finding.present else "阴性 absent"
        color = (180, 0, 0) if finding.present else (0, 110, 0)
        extra = "; ".join(_measure_text(m) for m in finding.measurements)
        name = f"{finding.finding_type.meaning} ({finding.label})"
        line = f"• {name}: {state}, p = {finding.probability:.2f}"
        page.text(line + (f"; {extra}" if extra else ""), size=22, color=color, indent=16, gap=0)
    for result in ctx.study.model_results:
        for m in result.measurements:
            page.text(f"• {_measure_text(m)}", size=22, indent=16, gap=0)
    page.y += 10
    page.rule()
    page.text("处理建议 Guidance", size=28)
    for statement in guidance:
        zh, en = URGENCY_WORDS[statement.urgency]
        page.text(f"[{zh} / {en}]", size=22, color=URGENCY_COLORS[statement.urgency], gap=0)
        for language in ctx.config.languages:
            if statement.text.get(language):
                page.text(statement.text[language], size=21, indent=16, gap=2)
        page.text(
            f"{statement.rule_id} {statement.rule_version}: {statement.guideline}",
            size=16,
            color=(100, 100, 100),
            indent=16,
        )
    footer = (
        f"medgate {__version__} · AI models: {models_label(ctx.study)} · "
        "AI结果须经放射科医生确认 / to be confirmed by a radiologist"
    )
    page.draw.text((MARGIN, PAGE[1] - MARGIN - 30), footer, font=cjk_font(16), fill=(90, 90, 90))
    return page.image


def build_summary(ctx: BuildContext, page: Image.Image) -> Dataset:
    """The rendered page as a secondary capture of a new series in the source study."""
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ctx.first,
            pixel_array=np.asarray(page.convert("RGB")),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=ctx.uid("summary", "series"),
            series_number=SERIES_NUMBERS["summary"],
            sop_instance_uid=ctx.uid("summary", "instance"),
            instance_number=1,
            manufacturer=ctx.config.manufacturer[:64],
            patient_orientation=("L", "P"),
            contributing_equipment=[
                model_equipment(r, ctx.config) for r in ctx.study.model_results
            ],
            series_description="AI result summary for the referring doctor",
            specific_character_set=CHARACTER_SET,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportError(f"cannot build the summary page: {exc}") from exc
    # a document page has no patient orientation (type 2: present and empty; pydicom's keyword
    # stubs type it as a list, None is how pydicom writes an empty value)
    sc.PatientOrientation = None  # type: ignore[assignment]
    set_body_part(sc, ctx.first)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.DerivationDescription = "AI result summary page rendered by medgate"
    return sc
