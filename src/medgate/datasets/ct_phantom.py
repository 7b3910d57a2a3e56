"""Seeded synthetic chest-CT phantoms with lung nodules of known position and size.

Why: the ct_nodule_seg demo bundle needs training and held-out data with exact ground truth, and
nothing can be downloaded here. A phantom is a small axial CT volume in Hounsfield units: air
outside, a soft-tissue body ellipse (~40 HU) with a fat rim, a spine, two lungs (~-850 HU) that
taper towards apex and base, straight vessel tubes (~40 HU) fanning out from the hila, and 0-3
solid spherical nodules (30-60 HU, 4-15 mm). Nodules and vessels are rendered with partial volume
(supersampled), so the image carries sub-voxel size information the way a real scanner's does.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same volume,
mask, geometry and identifiers. Splits use disjoint seed ranges (``SPLIT_BASE``), so held-out
studies are never seen in training.

``write_ct_series`` writes one CT Image Storage file per slice (valid for dciodvfy) and
``write_ct_folder`` a whole split with ``nodules.csv`` (ground truth) beside the studies.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from tqdm import tqdm

from medgate.core.uids import derived_uid
from medgate.datasets.phantom_dicom import with_file_meta

SPLIT_BASE = {"train": 0, "val": 100_000, "test": 900_000}
NAMESPACE = "medgate-ct-phantom"
GROUND_TRUTH_FILE = "nodules.csv"
ROWS = COLS = 96
HU_AIR, HU_LUNG, HU_SOFT, HU_FAT, HU_BONE = -1000.0, -850.0, 40.0, -100.0, 500.0
RESCALE_INTERCEPT = -1024.0


@dataclass
class Nodule:
    """A spherical solid nodule: centre in patient coordinates (mm, LPS) and diameter (mm)."""

    center_mm: tuple[float, float, float]  # x, y, z
    diameter_mm: float
    hu: float

    @property
    def volume_mm3(self) -> float:
        return float(np.pi / 6.0 * self.diameter_mm**3)


@dataclass
class CTPhantom:
    """One phantom study: HU volume (slices, rows, cols), label mask (1 = nodule), geometry."""

    seed: int
    hu: np.ndarray  # int16 HU, (slices, rows, cols)
    mask: np.ndarray  # uint8, 1 inside a nodule (voxel centre inside the sphere)
    spacing: tuple[float, float, float]  # slice step, row step, column step (mm)
    origin: tuple[float, float, float]  # patient position (x, y, z) of voxel (0, 0, 0)
    nodules: list[Nodule] = field(default_factory=list)
    patient_age: int = 60
    patient_sex: str = "M"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    def voxel_centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient x (cols), y (rows), z (slices) of voxel centres, as 1-D arrays."""
        dz, dy, dx = self.spacing
        depth, rows, cols = self.shape
        x = self.origin[0] + dx * np.arange(cols)
        y = self.origin[1] + dy * np.arange(rows)
        z = self.origin[2] + dz * np.arange(depth)
        return x, y, z


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of each point (..., 3) to the segment start-end."""
    axis = end - start
    t = np.clip(((points - start) @ axis) / float(axis @ axis), 0.0, 1.0)
    closest = start + t[..., None] * axis
    return np.linalg.norm(points - closest, axis=-1)


def _lung_masks(
    gx: np.ndarray, gy: np.ndarray, gz: np.ndarray, shape: dict[str, float]
) -> np.ndarray:
    """Boolean lung mask: two ellipses whose size tapers with a half-ellipse profile in z."""
    taper = np.sqrt(np.clip(1.0 - ((gz - shape["zc"]) / shape["hz"]) ** 2, 0.0, 1.0))
    lungs = np.zeros(np.broadcast(gx, gy, gz).shape, bool)
    for side in (-1.0, 1.0):
        cx = side * shape["lx"]
        ax, ay = shape["la"] * taper + 1e-6, shape["lb"] * taper + 1e-6
        lungs |= ((gx - cx) / ax) ** 2 + ((gy - shape["ly"]) / ay) ** 2 <= 1.0
    return lungs


def generate_ct_phantom(seed: int, nodules: int | None = None) -> CTPhantom:
    """A deterministic chest-CT phantom for ``seed``; ``nodules`` forces the nodule count."""
    rng = np.random.default_rng(seed)
    px = float(rng.uniform(3.0, 3.6))
    depth = int(rng.integers(24, 41))
    dz = float(rng.choice([2.5, 3.0, 3.75, 4.0, 5.0]))
    depth = min(depth, int(190 // dz))  # keep the z extent inside a chest
    origin = (-px * (COLS - 1) / 2.0, -px * (ROWS - 1) / 2.0, float(-dz * (depth - 1) / 2.0))
    x = origin[0] + px * np.arange(COLS)
    y = origin[1] + px * np.arange(ROWS)
    z = origin[2] + dz * np.arange(depth)
    gz, gy, gx = np.meshgrid(z, y, x, indexing="ij")

    half_fov = px * COLS / 2.0
    body_a = float(rng.uniform(0.78, 0.9)) * half_fov
    body_b = body_a * float(rng.uniform(0.62, 0.75))
    body_y = float(rng.uniform(-8, 8))
    body = (gx / body_a) ** 2 + ((gy - body_y) / body_b) ** 2
    hu = np.full(gx.shape, HU_AIR, np.float32)
    hu[body <= 1.0] = HU_FAT
    hu[body <= 0.88] = HU_SOFT
    shape = {
        "lx": body_a * float(rng.uniform(0.42, 0.48)),
        "la": body_a * float(rng.uniform(0.36, 0.42)),
        "lb": body_b * float(rng.uniform(0.62, 0.72)),
        "ly": body_y - body_b * 0.05,
        "zc": float(rng.uniform(-10, 10)) + z.mean(),
        "hz": (z[-1] - z[0]) * float(rng.uniform(0.62, 0.75)) + 20.0,
    }
    lungs = _lung_masks(gx, gy, gz, shape)
    hu[lungs] = HU_LUNG + rng.normal(0, 15, size=int(lungs.sum())).astype(np.float32)
    spine = (gx / 14.0) ** 2 + ((gy - (body_y + body_b * 0.72)) / 14.0) ** 2 <= 1.0
    hu[spine] = HU_BONE

    # Vessels: tubes from each hilum outwards, clipped to the lungs (partial volume edges).
    points = np.stack([gx, gy, gz], axis=-1)
    for side in (-1.0, 1.0):
        hilum = np.array([side * shape["lx"] * 0.55, shape["ly"], shape["zc"]])
        for _ in range(int(rng.integers(4, 8))):
            direction = rng.normal(size=3)
            direction[0] = side * abs(direction[0]) + side * 0.5
            direction /= np.linalg.norm(direction)
            end = hilum + direction * float(rng.uniform(50, 110))
            radius = float(rng.uniform(1.5, 3.0))
            frac = np.clip((radius - _segment_distance(points, hilum, end)) / px + 0.5, 0, 1)
            frac = np.where(lungs, frac, 0.0)
            hu = hu + frac * (HU_SOFT - hu)

    # Nodules: inside the lungs, away from the pleura, with supersampled partial volume.
    count = int(rng.choice([0, 1, 1, 2, 2, 3])) if nodules is None else nodules
    mask = np.zeros(gx.shape, np.uint8)
    placed: list[Nodule] = []
    lung_idx = np.argwhere(lungs)
    sub = (np.arange(3) - 1) / 3.0
    for _ in range(count):
        for _attempt in range(200):
            diameter = float(rng.uniform(4.0, 15.0))
            k, r, c = lung_idx[int(rng.integers(len(lung_idx)))]
            centre = np.array([x[c], y[r], z[k]]) + rng.uniform(-0.5, 0.5, 3) * [px, px, dz]
            radius = diameter / 2.0
            probe = centre + np.array(
                [[s * (radius + 6), 0, 0] for s in (-1, 1)]
                + [[0, s * (radius + 6), 0] for s in (-1, 1)]
                + [[0, 0, s * (radius + 3)] for s in (-1, 1)]
            )
            inside = _lung_masks(probe[:, 0], probe[:, 1], probe[:, 2], shape).all()
            apart = all(
                np.linalg.norm(centre - np.array(n.center_mm)) > (diameter + n.diameter_mm) / 2 + 10
                for n in placed
            )
            if inside and apart:
                break
        else:
            continue
        hu_nod = float(rng.uniform(30, 60))
        reach = radius + max(px, dz)
        ks = np.flatnonzero(np.abs(z - centre[2]) <= reach)
        rs = np.flatnonzero(np.abs(y - centre[1]) <= reach)
        cs = np.flatnonzero(np.abs(x - centre[0]) <= reach)
        box = np.ix_(ks, rs, cs)
        frac = np.zeros((len(ks), len(rs), len(cs)), np.float32)
        for oz in sub:
            for oy in sub:
                for ox in sub:
                    d2 = (
                        (z[ks][:, None, None] + oz * dz - centre[2]) ** 2
                        + (y[rs][None, :, None] + oy * px - centre[1]) ** 2
                        + (x[cs][None, None, :] + ox * px - centre[0]) ** 2
                    )
                    frac += (d2 <= radius**2) / 27.0
        hu[box] = hu[box] + frac * (hu_nod - hu[box])
        d2 = (
            (z[ks][:, None, None] - centre[2]) ** 2
            + (y[rs][None, :, None] - centre[1]) ** 2
            + (x[cs][None, None, :] - centre[0]) ** 2
        )
        mask[box] |= (d2 <= radius**2).astype(np.uint8)
        placed.append(
            Nodule((float(centre[0]), float(centre[1]), float(centre[2])), diameter, hu_nod)
        )

    noise = float(rng.uniform(8, 25))
    hu = hu + np.asarray(rng.normal(0, noise, size=hu.shape), dtype=np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return CTPhantom(
        seed=seed,
        hu=hu,
        mask=mask,
        spacing=(dz, px, px),
        origin=origin,
        nodules=placed,
        patient_age=int(rng.integers(40, 85)),
        patient_sex=str(rng.choice(["M", "F"])),
    )


def _uid(kind: str, seed: int, *extra: str) -> str:
    return derived_uid(NAMESPACE, kind, str(seed), *extra)


def ct_series_datasets(
    phantom: CTPhantom, institution: str = "Demo Township Health Centre"
) -> list[Dataset]:
    """One CT Image Storage data set (with file meta) per slice, in slice order (inferior first).

    Fake identifiers derived from the seed; axial orientation (1,0,0,0,1,0); stored as unsigned
    16-bit values with RescaleIntercept -1024 so that HU = value - 1024.
    """
    seed = phantom.seed
    dz, dy, dx = phantom.spacing
    study_date = dt.date(2024, 1, 1) + dt.timedelta(days=seed % 700)
    birth = dt.date(study_date.year - phantom.patient_age, 1 + seed % 12, 1 + seed % 28)
    stored = (phantom.hu.astype(np.int32) - int(RESCALE_INTERCEPT)).astype("<u2")
    study_time = f"{8 + seed % 10:02d}{seed % 60:02d}00"
    datasets = []
    for k in range(phantom.shape[0]):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = f"PHANTOM^CT{seed:07d}"
        ds.PatientID = f"PHCT{seed:08d}"
        ds.PatientBirthDate = birth.strftime("%Y%m%d")
        ds.PatientSex = phantom.patient_sex
        ds.PatientAge = f"{phantom.patient_age:03d}Y"
        ds.StudyInstanceUID = _uid("study", seed)
        ds.StudyDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = study_time
        ds.ReferringPhysicianName = ""
        ds.StudyID = f"S{seed % 100000:05d}"
        ds.AccessionNumber = f"CT{seed:08d}"
        ds.StudyDescription = "CT CHEST"
        ds.Modality = "CT"
        ds.SeriesInstanceUID = _uid("series", seed)
        ds.SeriesNumber = 2
        ds.SeriesDescription = "CHEST AXIAL"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "FFS"
        ds.FrameOfReferenceUID = _uid("for", seed)
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "medgate phantom"
        ds.InstitutionName = institution
        ds.ManufacturerModelName = "ct_phantom"
        ds.SoftwareVersions = "1"
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = study_time
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BurnedInAnnotation = "NO"
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = phantom.origin[2] + dz * k
        ds.ImagePositionPatient = [
            f"{phantom.origin[0]:.4f}",
            f"{phantom.origin[1]:.4f}",
            f"{z:.4f}",
        ]
        ds.SliceLocation = f"{z:.4f}"
        ds.SliceThickness = f"{dz:.4f}"
        ds.SpacingBetweenSlices = f"{dz:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = phantom.shape[1], phantom.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = int(RESCALE_INTERCEPT)
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        ds.KVP = 120
        ds.ConvolutionKernel = "STANDARD"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid("instance", seed, str(k))
        ds.InstanceCreationDate = ds.StudyDate
        ds.InstanceCreationTime = study_time
        datasets.append(with_file_meta(ds))
    return datasets


def write_ct_series(phantom: CTPhantom, folder: Path) -> list[Path]:
    """Write the phantom as ``folder/slice_NNN.dcm`` (Part 10) plus ``mask.npz``; return files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(ct_series_datasets(phantom)):
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    np.savez_compressed(folder / "mask.npz", mask=phantom.mask)
    return paths


def split_seeds(split: str, count: int, base: int | None = None) -> list[int]:
    """The seeds of a split: disjoint ranges per split (``SPLIT_BASE``)."""
    if split not in SPLIT_BASE and base is None:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_BASE)}")
    start = SPLIT_BASE.get(split, 0) if base is None else base
    return [start + i for i in range(count)]


GT_FIELDS = ["study", "seed", "nodule", "x_mm", "y_mm", "z_mm", "diameter_mm", "volume_mm3"]


def write_ct_folder(
    folder: Path, split: str, count: int, progress: bool = False
) -> list[CTPhantom]:
    """Write ``count`` phantom studies of ``split`` under ``folder`` with ``nodules.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    phantoms = []
    with (folder / GROUND_TRUTH_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=GT_FIELDS)
        writer.writeheader()
        for seed in tqdm(split_seeds(split, count), desc=f"ct {split}", disable=not progress):
            phantom = generate_ct_phantom(seed)
            study = f"ct{seed:07d}"
            write_ct_series(phantom, folder / study)
            for i, nodule in enumerate(phantom.nodules):
                writer.writerow(
                    {
                        "study": study,
                        "seed": seed,
                        "nodule": i + 1,
                        "x_mm": round(nodule.center_mm[0], 3),
                        "y_mm": round(nodule.center_mm[1], 3),
                        "z_mm": round(nodule.center_mm[2], 3),
                        "diameter_mm": round(nodule.diameter_mm, 3),
                        "volume_mm3": round(nodule.volume_mm3, 2),
                    }
                )
            phantoms.append(phantom)
    return phantoms
