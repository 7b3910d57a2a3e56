"""Request bodies of the JSON API: explicit units in every name, physiological ranges.

A value outside its range is answered 422 naming the field; where the value looks like it was
sent in another unit, the message says which field to use instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medgate.clinical.common import MG_DL_PER_MMOL_L_CHOLESTEROL, check_bp_pair
from medgate.clinical.followup import Condition, VisitHistory
from medgate.clinical.news2 import NEWS2_MIN_AGE

Consciousness = Literal["A", "C", "V", "P", "U"]

RANGES: dict[str, tuple[float, float, str | None]] = {
    # field: (low, high, hint when out of range)
    "total_cholesterol_mmol_l": (
        1.0,
        20.0,
        "a value this size looks like mg/dL: use total_cholesterol_mg_dl",
    ),
    "total_cholesterol_mg_dl": (
        40.0,
        800.0,
        "a value this size looks like mmol/L: use total_cholesterol_mmol_l",
    ),
    "hdl_cholesterol_mmol_l": (
        0.1,
        5.0,
        "a value this size looks like mg/dL: use hdl_cholesterol_mg_dl",
    ),
    # HDL below 8 mg/dL (0.2 mmol/L) is not a real HDL value: it is mmol/L in the mg/dL field.
    "hdl_cholesterol_mg_dl": (
        8.0,
        200.0,
        "a value this size looks like mmol/L: use hdl_cholesterol_mmol_l",
    ),
    "temperature_c": (25.0, 45.0, "temperature is in degrees Celsius"),
    "fasting_glucose_mmol_l": (0.5, 50.0, "glucose is in mmol/L (mg/dL / 18)"),
    "random_glucose_mmol_l": (0.5, 50.0, "glucose is in mmol/L (mg/dL / 18)"),
    "triglycerides_mmol_l": (0.1, 60.0, "triglycerides are in mmol/L"),
    "ldl_cholesterol_mmol_l": (0.1, 15.0, "LDL is in mmol/L"),
    "waist_cm": (40.0, 200.0, "waist is in centimetres"),
}


def _check_range(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    low, high, hint = RANGES[name]
    if not low <= value <= high:
        extra = f"; {hint}" if hint else ""
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}{extra}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Ranged(_Strict):
    """A request whose fields named in ``RANGES`` are checked there, with the unit hint."""

    @field_validator("*")
    @classmethod
    def _in_range(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name
        if name in RANGES and isinstance(value, int | float):
            return _check_range(name, value)
        return value


class LipidsMixin(_Ranged):
    total_cholesterol_mmol_l: float | None = None
    total_cholesterol_mg_dl: float | None = None
    hdl_cholesterol_mmol_l: float | None = None
    hdl_cholesterol_mg_dl: float | None = None

    def lipid_mg_dl(self, lipid: Literal["total_cholesterol", "hdl_cholesterol"]) -> float | None:
        mmol = getattr(self, f"{lipid}_mmol_l")
        mg = getattr(self, f"{lipid}_mg_dl")
        if mg is not None:
            return float(mg)
        if mmol is not None:
            return float(mmol) * MG_DL_PER_MMOL_L_CHOLESTEROL
        return None

    def _one_unit_each(self, required: bool) -> None:
        for lipid in ("total_cholesterol", "hdl_cholesterol"):
            mmol = getattr(self, f"{lipid}_mmol_l")
            mg = getattr(self, f"{lipid}_mg_dl")
            if mmol is not None and mg is not None:
                raise ValueError(f"{lipid}_mmol_l and {lipid}_mg_dl: give one of the two, not both")
            if required and mmol is None and mg is None:
                raise ValueError(f"{lipid}_mmol_l or {lipid}_mg_dl: one is required")
        tc, hdl = self.lipid_mg_dl("total_cholesterol"), self.lipid_mg_dl("hdl_cholesterol")
        if tc is not None and hdl is not None and hdl >= tc:
            raise ValueError(
                f"HDL cholesterol ({hdl * 0.0259:.2f} mmol/L) is not below total cholesterol "
                f"({tc * 0.0259:.2f} mmol/L): HDL is part of the total; check values and units"
            )


class ChinaParRequest(LipidsMixin):
    age: int = Field(ge=18, le=120, description="years")
    sex: Literal["male", "female"]
    sbp_mmhg: int = Field(ge=60, le=300)
    on_bp_treatment: bool
    waist_cm: float = Field(ge=40, le=200)
    current_smoker: bool
    diabetes: bool
    region: Literal["north", "south"] = Field(description="north or south of the Yangtze")
    residence: Literal["urban", "rural"]
    family_history_ascvd: bool
    dbp_mmhg: int | None = Field(None, ge=20, le=200)
    ldl_cholesterol_mmol_l: float | None = None
    bmi: float | None = Field(
        None, ge=12, le=70, description="kg/m2; a lifetime-risk factor (>= 28), not in the equation"
    )
    ascvd: bool = Field(False, description="established ASCVD: excluded from the calculator")
    ckd_stage_3_4: bool = False

    @model_validator(mode="after")
    def _lipids(self) -> ChinaParRequest:
        self._one_unit_each(required=True)
        check_bp_pair(self.sbp_mmhg, self.dbp_mmhg)
        return self


class News2Request(_Ranged):
    respiratory_rate: int = Field(ge=0, le=80, description="breaths per minute")
    spo2: int = Field(ge=50, le=100, description="percent")
    spo2_scale: Literal[1, 2] = Field(1, description="2 for hypercapnic respiratory failure")
    on_oxygen: bool
    sbp_mmhg: int = Field(ge=40, le=300)
    heart_rate: int = Field(ge=20, le=300, description="beats per minute")
    consciousness: Consciousness = Field(description="ACVPU: A alert, C new confusion, V, P, U")
    temperature_c: float
    age: int | None = Field(None, le=120, description="years; NEWS2 is for ages 16 and over")
    deteriorating: bool | None = Field(None, description="clinical deterioration observed")

    @field_validator("age")
    @classmethod
    def _age(cls, value: int | None) -> int | None:
        return _news2_age(value)


def _news2_age(value: int | None) -> int | None:
    if value is not None and value < NEWS2_MIN_AGE:
        raise ValueError(
            f"NEWS2 is for patients aged {NEWS2_MIN_AGE} or over (RCP 2017), got {value}: use a "
            "paediatric early warning score"
        )
    return value


class QsofaRequest(_Strict):
    respiratory_rate: int = Field(ge=0, le=80)
    sbp_mmhg: int = Field(ge=40, le=300)
    consciousness: Consciousness
    suspected_infection: bool | None = Field(
        None, description="Sepsis-3: qSOFA is interpreted only when infection is suspected"
    )


class VisitReadings(_Ranged):
    """Today's readings that the follow-up and urgent rules judge, each optional."""

    # down to 20: a shocked patient's systolic pressure is a reading to act on, not to refuse
    sbp_mmhg: int | None = Field(None, ge=20, le=300)
    dbp_mmhg: int | None = Field(None, ge=20, le=200)
    fasting_glucose_mmol_l: float | None = None
    random_glucose_mmol_l: float | None = None
    hba1c_percent: float | None = Field(None, ge=3, le=20)
    ldl_cholesterol_mmol_l: float | None = None
    heart_rate: int | None = Field(None, ge=20, le=300)
    temperature_c: float | None = None
    consciousness: Consciousness | None = None

    @model_validator(mode="after")
    def _bp_pair(self) -> VisitReadings:
        check_bp_pair(self.sbp_mmhg, self.dbp_mmhg)
        return self


class FollowUpRequest(VisitReadings, VisitHistory):
    conditions: list[Condition] = Field(min_length=1)
    age: int | None = Field(None, ge=18, le=120)
    elderly_target_age: int = Field(
        65, ge=60, le=90, description="BP target < 150/90 from this age (65: 2017 spec; 80: 2020)"
    )
    ckd: bool = False
    ascvd: bool = False


class DiabetesProgressionRequest(_Strict):
    """Inputs of the demo learned model, in the units of its training data."""

    age: float = Field(ge=18, le=100)
    bmi: float = Field(ge=12, le=70)
    mean_arterial_pressure_mmhg: float = Field(ge=40, le=200)
    total_cholesterol_mg_dl: float = Field(ge=40, le=800)
    ldl_cholesterol_mg_dl: float = Field(ge=10, le=500)
    hdl_cholesterol_mg_dl: float = Field(ge=4, le=200)
    tc_hdl_ratio: float = Field(ge=0.5, le=30)
    ln_triglycerides_mg_dl: float = Field(ge=2, le=9)
    glucose_mg_dl: float = Field(ge=20, le=900)


class AssessRequest(LipidsMixin, VisitReadings, VisitHistory):
    """One patient summary; every field optional, each score computed when it can be.

    Any age is taken: which scores apply at which age is decided in ``clinical.assess`` (no score
    under 16, the adult scores from 18), and the answer says what was not computed and why.
    """

    age: int | None = Field(None, ge=0, le=120, description="years")
    sex: Literal["male", "female"] | None = None
    region: Literal["north", "south"] | None = None
    residence: Literal["urban", "rural"] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    diabetes: bool | None = None
    diabetes_type: Literal["type1", "type2", "unspecified"] | None = None
    ckd: bool = False
    ckd_stage_3_4: bool = False
    ascvd: bool = False
    elderly_target_age: int = Field(65, ge=60, le=90)
    current_smoker: bool | None = None
    family_history_ascvd: bool | None = None
    on_bp_treatment: bool | None = None
    respiratory_rate: int | None = Field(None, ge=0, le=80)
    # down to 20: severe hypoxaemia is to act on (a fraction such as 0.97 still fails, as 1)
    spo2: int | None = Field(None, ge=20, le=100)
    spo2_scale: Literal[1, 2] = 1
    on_oxygen: bool | None = None
    suspected_infection: bool | None = None
    deteriorating: bool | None = None
    waist_cm: float | None = None
    bmi: float | None = Field(None, ge=12, le=70)
    triglycerides_mmol_l: float | None = None

    @model_validator(mode="after")
    def _lipids(self) -> AssessRequest:
        self._one_unit_each(required=False)
        return self

    @model_validator(mode="after")
    def _diabetes_agrees(self) -> AssessRequest:
        """``diabetes: false`` beside a diabetes condition or type is a contradiction: China-PAR
        would count the patient as non-diabetic while the follow-up used diabetic targets."""
        if self.diabetes is False and (
            "type2_diabetes" in self.conditions or self.diabetes_type is not None
        ):
            raise ValueError(
                "diabetes is false but conditions or diabetes_type say diabetes: send one answer"
            )
        return self

    def has_diabetes(self) -> bool | None:
        if self.diabetes is not None:
            return self.diabetes
        if "type2_diabetes" in self.conditions or self.diabetes_type is not None:
            return True
        return None
