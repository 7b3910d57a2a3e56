"""The FHIR codes the decision support reads: LOINC for Observations; SNOMED CT and ICD-10 for
smoking status and for the Conditions that change the rules (diabetes by type, hypertension,
pregnancy or lactation, established ASCVD), with the statuses that make a Condition count.

Kept apart from the reading (``cds_fhir``) so that a clinician or terminologist can review the
value sets in one place; each code carries its meaning.
"""

from __future__ import annotations

import re

LOINC = "http://loinc.org"
BP_PANEL = "85354-9"  # Blood pressure panel with all children optional
BP_PANELS = {BP_PANEL, "55284-4"}  # 55284-4: Blood pressure systolic and diastolic
SBP = "8480-6"  # Systolic blood pressure
DBP = "8462-4"  # Diastolic blood pressure
# Lab codes come in mass ([Mass/volume], usually mg/dL) and molar ([Moles/volume], mmol/L, what
# Chinese labs report) variants; the quantity's unit decides any conversion (``_quantity``).
CODES: dict[str, str] = {
    SBP: "sbp_mmhg",
    DBP: "dbp_mmhg",
    "2093-3": "total_cholesterol",  # Cholesterol [Mass/volume] in Serum or Plasma
    "14647-2": "total_cholesterol",  # Cholesterol [Moles/volume] in Serum or Plasma
    "2085-9": "hdl_cholesterol",  # Cholesterol in HDL [Mass/volume] in Serum or Plasma
    "14646-4": "hdl_cholesterol",  # Cholesterol in HDL [Moles/volume] in Serum or Plasma
    "2089-1": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in Serum or Plasma
    "13457-7": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in S/P by calculation
    "18262-6": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in S/P by direct assay
    "22748-8": "ldl_cholesterol",  # Cholesterol in LDL [Moles/volume] in Serum or Plasma
    "39469-2": "ldl_cholesterol",  # Cholesterol in LDL [Moles/volume] in S/P by calculation
    "4548-4": "hba1c_percent",  # Hemoglobin A1c/Hemoglobin.total in Blood
    "1558-6": "fasting_glucose_mmol_l",  # Fasting glucose [Mass/volume] in Serum or Plasma
    "14771-0": "fasting_glucose_mmol_l",  # Fasting glucose [Moles/volume] in Serum or Plasma
    "2339-0": "random_glucose_mmol_l",  # Glucose [Mass/volume] in Blood
    "2345-7": "random_glucose_mmol_l",  # Glucose [Mass/volume] in Serum or Plasma
    "15074-8": "random_glucose_mmol_l",  # Glucose [Moles/volume] in Blood
    "14749-6": "random_glucose_mmol_l",  # Glucose [Moles/volume] in Serum or Plasma
    "8867-4": "heart_rate",
    "9279-1": "respiratory_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "8310-5": "temperature_c",
    "8280-0": "waist_cm",
    "39156-5": "bmi",
    "72166-2": "smoking",
}
OBSERVATION_CODES = [*sorted(BP_PANELS), *CODES]
LIPIDS = {"total_cholesterol", "hdl_cholesterol", "ldl_cholesterol"}
# Smoking status (LOINC 72166-2) is valued with the SNOMED CT codes of the US Core / HL7
# smoking-status value set. Current smokers: every day (449868002), some day (428041000124106),
# heavy (428071000124103), light (428061000124105); also 65568007 "cigarette smoker", a current
# finding outside that value set.
CURRENT_SMOKER_SNOMED = {
    "449868002",
    "428041000124106",
    "428071000124103",
    "428061000124105",
    "65568007",
}
# Ex-smoker (8517006) and never smoker (266919005): not a current smoker.
NON_SMOKER_SNOMED = {"8517006", "266919005"}
# Any other code leaves current_smoker unset, unknown stays unknown: 77176002 "Smoker, current
# status unknown" (has smoked; whether now is not known) and 266927001 "Unknown if ever smoked".
TYPE2_DIABETES = {"44054006", "E11"}
TYPE1_DIABETES = {"46635009", "E10"}
# Diabetes of unspecified type: treated as type 2 (the large majority of adult diabetes in China);
# the summary says "unspecified" so the answer can state the assumption.
UNSPECIFIED_DIABETES = {"73211009", "E14"}
DIABETES = TYPE2_DIABETES | TYPE1_DIABETES | UNSPECIFIED_DIABETES
HYPERTENSION = {"38341003", "59621000", "I10", "I11", "I12", "I13", "I15"}
# Pregnancy or lactation (``pregnant_or_lactating``): every code of ICD-10 chapter XV "Pregnancy,
# childbirth and the puerperium" (O00-O99, ICD-10-CM's O9A; e.g. O14.1 severe pre-eclampsia,
# O24.4 diabetes arising in pregnancy), matched by ``OBSTETRIC_CHAPTER``, and these:
PREGNANCY = {
    "Z33",  # ICD-10: pregnant state (incidental)
    "Z34",  # ICD-10: supervision of normal pregnancy
    "Z39.1",  # ICD-10: care and examination of lactating mother
    "77386006",  # SNOMED CT: pregnant
}
# "O", a digit, a digit or letter, then any subcode: chapter O, and no local code like "OTHER".
OBSTETRIC_CHAPTER = re.compile(r"O\d[\dA-Z](\..*)?")
# Established atherosclerotic cardiovascular disease (``ascvd``: secondary prevention, LDL-C target
# < 1.8 mmol/L, no China-PAR calculation).
ASCVD = {
    "I20",  # ICD-10: angina pectoris
    "I21",  # ICD-10: acute myocardial infarction
    "I22",  # ICD-10: subsequent myocardial infarction
    "I23",  # ICD-10: certain current complications following acute myocardial infarction
    "I24",  # ICD-10: other acute ischaemic heart diseases
    "I25",  # ICD-10: chronic ischaemic heart disease (I25.2: old myocardial infarction)
    "I63",  # ICD-10: cerebral infarction
    "I69.3",  # ICD-10: sequelae of cerebral infarction (how a stroke follow-up is often coded)
    "G45",  # ICD-10: transient cerebral ischaemic attacks (TIA)
    "I70",  # ICD-10: atherosclerosis
    "Z95.1",  # ICD-10: presence of aortocoronary bypass graft
    "Z95.5",  # ICD-10: presence of coronary angioplasty implant and graft
    "22298006",  # SNOMED CT: myocardial infarction
    "399211009",  # SNOMED CT: history of myocardial infarction
    "414545008",  # SNOMED CT: ischaemic heart disease
    "53741008",  # SNOMED CT: coronary arteriosclerosis
    "194828000",  # SNOMED CT: angina
    "432504007",  # SNOMED CT: cerebral infarction
    "266257000",  # SNOMED CT: transient ischaemic attack
}
# Chronic kidney disease (``ckd``: BP target < 130/80, LDL-C target < 2.6); stages 3-4 also
# ``ckd_stage_3_4`` (high ASCVD risk without calculation, Guideline 2019).
CKD = {
    "N18",  # ICD-10: chronic kidney disease (any stage; N18.9 unspecified)
    "709044004",  # SNOMED CT: chronic kidney disease
    "431855005",  # SNOMED CT: chronic kidney disease stage 1
    "431856006",  # SNOMED CT: chronic kidney disease stage 2
    "433146000",  # SNOMED CT: chronic kidney disease stage 5
}
CKD_STAGE_3_4 = {
    "N18.3",  # ICD-10: chronic kidney disease, stage 3
    "N18.4",  # ICD-10: chronic kidney disease, stage 4
    "433144002",  # SNOMED CT: chronic kidney disease stage 3
    "431857002",  # SNOMED CT: chronic kidney disease stage 4
}
# Condition.clinicalStatus: these count (no clinicalStatus, allowed in R4, counts as active).
ACTIVE_CLINICAL_STATUS = {"active", "recurrence", "relapse"}
# Condition.verificationStatus: these are not a diagnosis. unconfirmed / provisional /
# differential still count: a suspected diagnosis changes targets conservatively.
NOT_A_DIAGNOSIS = {"refuted", "entered-in-error"}


def matches(codes: set[str], wanted: set[str]) -> bool:
    """Whether a Condition's codes name one in ``wanted``: a SNOMED CT code exactly, an ICD-10
    code by its category (E11.9 is E11) or, where ``wanted`` names a subcode (Z95.1), by that
    subcode and its own subcodes (Z95.10), never by a sibling (Z95.0)."""
    for code in codes:
        if code in wanted or code.split(".")[0] in wanted:
            return True
        if any("." in w and code.startswith(w) for w in wanted):
            return True
    return False
