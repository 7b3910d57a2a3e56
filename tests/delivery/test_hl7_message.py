"""The ORU^R01 built from a result: segments field by field, parsed back by hl7apy (strict)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from tests.support.delivery_studies import add_study

from medgate.core.config import Settings
from medgate.delivery.enqueue import messages_for
from medgate.delivery.hl7_oru import build_oru, message_control_id
from medgate.delivery.study_header import NameParts, StudyHeader
from medgate.store.deliveries import DeliveryStore


def _parse(er7: str) -> Any:
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()  # the v2.5.1 ORU_R01 structure, strictly
    return message


def test_preliminary_oru_carries_patient_order_findings_guidance_and_sr(
    sites_settings: Settings, engine: sa.engine.Engine
) -> None:
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(engine)
    result = store.built_results(uid)[0]["result"]
    [row] = messages_for(sites_settings, store, uid, result, "P")
    assert row.site == "clinic-a" and row.destination == "hl7:clinic-a"
    assert row.message_id == message_control_id(uid, "hl7:clinic-a", "P")
    assert len(row.message_id) == 20

    msg = _parse(row.payload)
    msh = msg.msh
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msh.msh_10.to_er7() == row.message_id
    assert msh.msh_12.to_er7() == "2.5.1"
    assert msh.msh_18.to_er7() == "UNICODE UTF-8"
    assert msh.msh_6.to_er7() == "CLINIC_A"

    patient_result = msg.oru_r01_patient_result
    pid = patient_result.oru_r01_patient.pid
    assert pid.pid_3.to_er7() == "PID-0001"
    names = [rep.to_er7() for rep in pid.pid_5]
    assert names == ["Wang^Fang^^^^^L^A", "王^芳^^^^^L^I"]
    assert pid.pid_7.to_er7() == "19650304" and pid.pid_8.to_er7() == "F"

    order = patient_result.oru_r01_order_observation
    obr = order.obr
    assert obr.obr_2.to_er7() == "ACC-7"
    assert obr.obr_3.to_er7() == f"{uid}^MEDGATE"
    assert obr.obr_25.to_er7() == "P"
    assert obr.obr_27.to_er7() == "^^^^^A"  # urgent -> A (HL7 table 0027)

    obx = [group.obx for group in order.oru_r01_observation]
    by_type: dict[str, list[str]] = {}
    for segment in obx:
        assert segment.obx_11.to_er7() == "P"
        by_type.setdefault(segment.obx_2.to_er7(), []).append(segment.to_er7())
    findings = [s for s in obx if s.obx_3.to_er7().startswith(("27925004", "60046008"))]
    assert [f.obx_3.to_er7() for f in findings] == [
        "27925004^Nodule^SCT",
        "60046008^Pleural effusion^SCT",
    ]
    assert [f.obx_5.to_er7() for f in findings] == [
        "52101004^Present^SCT",
        "272519000^Absent^SCT",
    ]
    assert [f.obx_8.to_er7() for f in findings] == ["A", "N"]
    numbers = [s for s in obx if s.obx_2.to_er7() == "NM"]
    assert numbers and all(s.obx_6.to_er7() == "mm^millimeter^UCUM" for s in numbers)
    assert {s.obx_5.to_er7() for s in numbers} == {"9.5"}
    texts: dict[str, list[str]] = {}
    for segment in obx:
        if segment.obx_2.to_er7() == "TX":
            language = segment.obx_4.to_er7().rsplit(".", 1)[1]
            lines = [line.to_er7() for line in segment.obx_5]
            texts.setdefault(language, []).append("~".join(lines))
    assert set(texts) == {"zh", "en"}
    # one OBX per statement and language; long text as OBX-5 repetitions (lines)
    statements = result["guidance"]
    assert len(texts["zh"]) == len(statements) == len(texts["en"])
    for statement, zh, en in zip(statements, texts["zh"], texts["en"], strict=True):
        assert zh.replace("~", "") == statement["text"]["zh"].replace("\n", "")
        assert en.replace("~", " ") == statement["text"]["en"]
        assert all(len(line) <= 199 for line in zh.split("~") + en.split("~"))
    assert any("\u4e00" <= c <= "\u9fff" for c in texts["zh"][0])
    [sr] = [s for s in obx if s.obx_2.to_er7() == "RP"]
    sr_uid = result["result_objects"][0]["sop_instance_uid"]
    assert sr.obx_3.to_er7() == "126000^Imaging Measurement Report^DCM"
    assert sr.obx_5.to_er7() == f"{sr_uid}^DICOM^application^dicom"


def test_delimiters_in_text_are_escaped_and_chinese_is_utf8() -> None:
    header = StudyHeader(
        patient_id="A|B^C",
        names=[NameParts("O&Brien", "Jo~e"), NameParts("张", "三", representation="I")],
        accession_number="AC\\1",
        study_instance_uid="1.2.3",
    )
    guidance = "复查 | 随访 ^ 转诊 & 记录 ~ 完 \\ 结束"
    er7 = build_oru(
        header=header,
        result={"guidance": [{"rule_id": "r1", "text": {"zh": guidance}}]},
        result_status="F",
        control_id=message_control_id("1.2.3", "hl7:x", "F"),
        sending_application="MEDGATE",
        sending_facility="REGION",
        receiving_application="HIS",
        receiving_facility="X",
        message_time=dt.datetime(2026, 12, 6, 1, 2, 3),
        languages=["zh"],
    )
    segments = er7.split("\r")
    pid = next(s for s in segments if s.startswith("PID|"))
    assert "A\\F\\B\\S\\C" in pid
    assert "O\\T\\Brien^Jo\\R\\e" in pid and "张^三" in pid
    obx = next(s for s in segments if s.startswith("OBX|"))
    assert "复查 \\F\\ 随访 \\S\\ 转诊 \\T\\ 记录 \\R\\ 完 \\E\\ 结束" in obx
    assert obx.split("|")[11] == "F"
    encoded = er7.encode("utf-8")
    assert "复查".encode() in encoded  # carried as UTF-8 bytes, as MSH-18 says
    message = _parse(er7)
    fields = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    assert fields.obx.obx_5.to_er7().startswith("复查")
    assert message.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7() == "F"


def test_control_id_is_the_same_for_the_same_message_only() -> None:
    first = message_control_id("1.2.3", "hl7:a", "P")
    assert first == message_control_id("1.2.3", "hl7:a", "P")
    others = {
        message_control_id("1.2.3", "hl7:a", "F"),
        message_control_id("1.2.3", "hl7:b", "P"),
        message_control_id("1.2.4", "hl7:a", "P"),
    }
    assert first not in others and len(others) == 3
