"""End-to-end privacy test (issue: patient privacy).

DICOM radiographs whose headers carry known, distinctive identifiers are stored like a PACS export
(``<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, so the datalist ids themselves name the patient),
listed in a CheXpert-style CSV, trained on and logged through the full chest X-ray bundle with MLflow tracking
on (``python -m monai.bundle run``). Then every byte the run left behind is searched for those identifiers:
the SQLite store, every artifact (config, fingerprint, grids, provenance, the logged and registered model),
``mlflow_run.json``, the checkpoints, the captured stdout / stderr and any other file under the output folder.
None may be found. A control search on the raw data proves the search itself finds what it looks for.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from monai_patronus.data import CHEXPERT_LABELS
from monai_patronus.tracking import Pseudonymizer
from tests.bundles._workflow import BUNDLES, run_cli

pytestmark = pytest.mark.slow  # trains a model or runs a CLI / notebook kernel

pydicom = pytest.importorskip("pydicom")
mlflow = pytest.importorskip("mlflow")

BUNDLE = "patronus_chest_xray"
MODEL_NAME = "patronus-chest-xray"  # the bundle's registered_model_name

# ---------------------------------------------------------------------------------------------- the patients
# Distinctive values (unlikely to occur by chance anywhere); UIDs are generated per test run below.
PATIENTS = [
    {
        "PatientName": "Quixote^Dulcinea",
        "PatientID": "PIDQX7731",
        "OtherPatientIDs": "MRNQX-0042917",
        "PatientBirthDate": "19450317",
        "PatientSex": "F",
        "PatientAddress": "17 Rocinante Lane, El Toboso",
        "PatientTelephoneNumbers": "+34-925-558-0173",
        "InstitutionName": "Hospital Santa Quiteria de Zorbalan",
        "InstitutionAddress": "9 Calle Barataria, Argamasilla",
        "ReferringPhysicianName": "Panza^Sancho",
        "StationName": "QXROOM-ZORB7",
        "DeviceSerialNumber": "SNQX-55120-7",
        "studies": [
            {
                "StudyDate": "20190611",
                "StudyTime": "231749.3316",
                "AccessionNumber": "ACCQX88213",
                "StudyID": "STQX4471",
                "photometric": "MONOCHROME2",
            },
            {
                "StudyDate": "20210223",
                "StudyTime": "044122.8107",
                "AccessionNumber": "ACCQX90577",
                "StudyID": "STQX5083",
                "photometric": "MONOCHROME1",
            },
        ],
    },
    {
        "PatientName": "Karamazov^Grushenka",
        "PatientID": "PIDKZ4402",
        "OtherPatientIDs": "MRNKZ-0077310",
        "PatientBirthDate": "19380921",
        "PatientSex": "F",
        "PatientAddress": "4 Skotoprigonyevsk Embankment",
        "PatientTelephoneNumbers": "+7-812-555-0199",
        "InstitutionName": "Zosimov Memorial Infirmary",
        "InstitutionAddress": "22 Smerdyakov Yard, Staraya Russa",
        "ReferringPhysicianName": "Herzenstube^Ippolit",
        "StationName": "KZROOM-ZOSIM3",
        "DeviceSerialNumber": "SNKZ-30981-2",
        "studies": [
            {
                "StudyDate": "20180905",
                "StudyTime": "135206.9043",
                "AccessionNumber": "ACCKZ71468",
                "StudyID": "STKZ2296",
                "photometric": "MONOCHROME2",
            },
            {
                "StudyDate": "20200417",
                "StudyTime": "092538.1174",
                "AccessionNumber": "ACCKZ73925",
                "StudyID": "STKZ3012",
                "photometric": "MONOCHROME2",
            },
        ],
    },
]
PRIVATE_CREATOR = "QXVENDOR 1.0"
PRIVATE_NOTE = "PRIVNOTE-Lamancha-5531"  # a vendor private tag, as real exports carry


def _radiograph(seed: int, shape=(128, 128)) -> np.ndarray:
    """A smooth synthetic chest in [0, 1]: bright body, two dark lung fields, a spine, gentle noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]] / np.array(shape).reshape(2, 1, 1)
    body = 0.85 * (((x - 0.5) / 0.45) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1)
    lungs = sum(np.exp(-((((x - cx) / 0.13) ** 2 + ((y - 0.5) / 0.25) ** 2) ** 2)) for cx in (0.32 + 0.01 * seed, 0.68))
    spine = 0.2 * np.exp(-(((x - 0.5) / 0.04) ** 2))
    image = body - 0.55 * lungs + spine * (body > 0) + 0.02 * rng.standard_normal(shape)
    return np.clip(image, 0, 1)


def _write_radiograph(path: Path, pixels: np.ndarray, patient: dict, study: dict, uids: dict) -> None:
    """A 12-bit DX 'for presentation' image with every identifier of ``patient`` / ``study`` in its header."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uids["SOPInstanceUID"]
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    for keyword in (
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "PatientBirthDate",
        "PatientSex",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "StationName",
        "DeviceSerialNumber",
    ):
        setattr(ds, keyword, patient[keyword])
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, study["StudyDate"])
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study["StudyTime"]
    ds.AcquisitionDateTime = study["StudyDate"] + study["StudyTime"]
    ds.AccessionNumber = study["AccessionNumber"]
    ds.StudyID = study["StudyID"]
    for keyword, uid in uids.items():
        setattr(ds, keyword, uid)
    ds.OperatorsName = "Carrasco^Sanson"
    ds.StudyDescription = "CHEST PA " + patient["PatientID"]
    ds.Modality = "DX"
    ds.Manufacturer = "Example Imaging"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.143, 0.143]
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.private_block(0x0011, PRIVATE_CREATOR, create=True).add_new(0x01, "LO", PRIVATE_NOTE)
    ds.set_pixel_data(pixels, study["photometric"], 12, generate_instance_uid=False)
    if study["photometric"] == "MONOCHROME1":
        ds.PresentationLUTShape = "INVERSE"
    ds.save_as(str(path), enforce_file_format=True)


def _write_pacs_export(root: Path) -> tuple[list[str], list[dict], dict]:
    """``root/<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` for every study and a CheXpert-style
    ``train.csv`` naming them by relative path, plus a corrupt file and a missing one. Returns the datalist ids
    of the good images (paths without suffix), the header of every good image (the patient's values merged with
    the study's and the UIDs), and the UIDs in the paths of the two bad rows."""
    from pydicom.uid import generate_uid

    root.mkdir(parents=True)
    ids, headers, rows = [], [], []
    for p, patient in enumerate(PATIENTS):
        for s, study in enumerate(patient["studies"]):
            uids = {
                key: generate_uid()
                for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
            }
            image = _radiograph(2 * p + s)
            stored = (image * 4095).astype(np.uint16)
            if study["photometric"] == "MONOCHROME1":  # minimum = white
                stored = (4095 - stored).astype(np.uint16)
            rel = f"{patient['PatientID']}/{uids['StudyInstanceUID']}/{uids['SOPInstanceUID']}.dcm"
            (root / rel).parent.mkdir(parents=True)
            _write_radiograph(root / rel, stored, patient, study, uids)
            ids.append(rel[: -len(".dcm")])
            headers.append({**{k: v for k, v in patient.items() if k != "studies"}, **study, **uids})
            labels = ["1.0" if j == (2 * p + s) % 14 else "" for j in range(14)]
            rows.append([rel, "Female", 2021 - int(patient["PatientBirthDate"][:4]), "Frontal", "PA", *labels])
    # one corrupt file and one missing file, in the same PACS layout (rows 6 and 7 of the CSV): the run skips both
    bad = {}
    for patient, what in ((PATIENTS[0], "corrupt"), (PATIENTS[1], "missing")):
        uids = {key: generate_uid() for key in ("StudyInstanceUID", "SOPInstanceUID")}
        rel = f"{patient['PatientID']}/{uids['StudyInstanceUID']}/{uids['SOPInstanceUID']}.dcm"
        if what == "corrupt":
            (root / rel).parent.mkdir(parents=True)
            (root / rel).write_bytes(b"DICM but truncated " + patient["PatientID"].encode())
        bad[what] = uids
        rows.append([rel, "Female", 80, "Frontal", "PA", *(["1.0"] + [""] * 13)])
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS])
        writer.writerows(rows)
    return ids, headers, bad


# ---------------------------------------------------------------------------------------------- the search
@dataclass(frozen=True)
class Needle:
    """An identifier to look for: ``what`` names it in failure messages. Text is matched case-insensitively;
    short purely numeric values (dates) only as a whole number, not inside a longer digit run such as a float's
    decimals, where eight given digits do occur by chance among the many numbers a run writes."""

    what: str
    text: str
    in_path: bool = False  # part of the datalist ids (CSV Path: PatientID / StudyInstanceUID / SOPInstanceUID)

    @property
    def pattern(self) -> bytes:
        return self.text.lower().encode()

    @property
    def numeric(self) -> bool:
        return self.text.isdigit() and len(self.text) <= 14


def _needles(headers: list[dict]) -> list[Needle]:
    needles: dict[str, Needle] = {}

    def add(what, text, in_path=False):
        needles.setdefault(text.lower(), Needle(what, text, in_path))

    for h in headers:
        family, given = h["PatientName"].split("^")
        add("PatientName", h["PatientName"])
        add("PatientName (spaces)", f"{family} {given}")
        add("PatientName (given family)", f"{given} {family}")
        add("PatientName (family)", family)
        add("PatientName (given)", given)
        add("PatientID", h["PatientID"], in_path=True)
        for keyword in (
            "OtherPatientIDs",
            "PatientAddress",
            "PatientTelephoneNumbers",
            "InstitutionName",
            "InstitutionAddress",
            "StationName",
            "DeviceSerialNumber",
            "AccessionNumber",
            "StudyID",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
        ):
            add(keyword, h[keyword])
        for keyword in ("StudyInstanceUID", "SOPInstanceUID"):
            add(keyword, h[keyword], in_path=True)
            add(f"{keyword} (tail)", h[keyword][-20:], in_path=True)  # a truncated UID
        add("ReferringPhysicianName", h["ReferringPhysicianName"])
        add("ReferringPhysicianName (family)", h["ReferringPhysicianName"].split("^")[0])
        for keyword in ("PatientBirthDate", "StudyDate"):  # StudyDate is also Series/Acquisition/ContentDate
            date = h[keyword]
            add(keyword, date)
            add(f"{keyword} (ISO)", f"{date[:4]}-{date[4:6]}-{date[6:]}")
            add(f"{keyword} (slashes)", f"{date[:4]}/{date[4:6]}/{date[6:]}")
        add("StudyTime", h["StudyTime"])
        t = h["StudyTime"]
        add("StudyTime (ISO)", f"{t[:2]}:{t[2:4]}:{t[4:]}")
        add("AcquisitionDateTime", h["StudyDate"] + h["StudyTime"])
        add("PatientAddress (street)", h["PatientAddress"].split(",")[0])
    add("OperatorsName", "Carrasco^Sanson")
    add("OperatorsName (family)", "Carrasco")
    add("private tag", PRIVATE_NOTE)
    return list(needles.values())


def _occurs(blob: bytes, needle: Needle) -> bool:
    """``needle`` in ``blob`` (already lower-cased)."""
    pattern = needle.pattern
    start = blob.find(pattern)
    if not needle.numeric:
        return start >= 0
    digits = b"0123456789"
    while start >= 0:
        before = blob[start - 1 : start] if start else b""
        after = blob[start + len(pattern) : start + len(pattern) + 1]
        if (not before or before not in digits + b".") and (not after or after not in digits):
            return True
        start = blob.find(pattern, start + 1)
    return False


def _views(path: Path) -> list[tuple[str, bytes]]:
    """The bytes of ``path`` and, for a zip archive (torch checkpoints, packed models), of every compressed
    member decompressed (stored members are already plain in the file's bytes)."""
    blob = path.read_bytes()
    views = [(str(path), blob)]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    views.append((f"{path}!{info.filename}", archive.read(info)))
    return views


@dataclass
class Search:
    needles: list[Needle]
    found: list[str] = field(default_factory=list)
    num_files: int = 0
    num_bytes: int = 0

    def blob(self, name: str, blob: bytes, allow_path_ids: bool = False) -> list[Needle]:
        """Search one blob; records and returns the needles found (those of the datalist ids are allowed,
        not recorded, with ``allow_path_ids``)."""
        self.num_files += 1
        self.num_bytes += len(blob)
        low = blob.lower()
        hits = [n for n in self.needles if _occurs(low, n)]
        for n in hits:
            if not (allow_path_ids and n.in_path):
                at = low.find(n.pattern)
                context = blob[max(0, at - 80) : at + len(n.pattern) + 40].decode("utf-8", "replace")
                self.found.append(f"{n.what} {n.text!r} in {name}: ...{context!r}...")
        return hits

    def file(self, path: Path, allow_path_ids: bool = False) -> list[Needle]:
        return [hit for name, blob in _views(path) for hit in self.blob(name, blob, allow_path_ids)]


# ---------------------------------------------------------------------------------------------- the store
USER, TOKEN = "alice-qx", "S3CR3T-QX-TOKEN"  # credentials in the tracking URI, as a user might give them
KEY = "5eed" * 8  # a pseudonym key given as a config override: a secret that must not be logged either


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on a free loopback port, its store and artifacts under ``tmp_path/server``:
    ``(uri without credentials, folder)``."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path / "server"
    folder.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder.parent / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'store.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(uri + "/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("mlflow server exited: " + (folder.parent / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer in 2 minutes")
        yield uri, folder
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


# ---------------------------------------------------------------------------------------------- the test
def test_no_identifier_path_or_credential_reaches_mlflow_logs_or_outputs(tmp_path, monkeypatch, mlflow_server):
    """PACS-style paths (folders named by PatientID, files by UIDs), one corrupt and one missing file in the CSV,
    credentials in the tracking URI and a pseudonym key given in the config: none of it, and no DICOM header
    value, reaches the MLflow store (database and artifacts), the output folder, or what the run printed."""
    for var in ("MLFLOW_TRACKING_URI", "PATRONUS_PSEUDONYM_KEY", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    # conftest sets it in os.environ, which run_cli passes to the bundle process (no telemetry leaves the box)
    assert os.environ.get("MLFLOW_DISABLE_TELEMETRY") == "true"
    server_uri, server_dir = mlflow_server
    secret_uri = server_uri.replace("http://", f"http://{USER}:{TOKEN}@")
    data, out = tmp_path / "pacs_export", tmp_path / "out"
    ids, headers, bad = _write_pacs_export(data)
    bundle_dir = BUNDLES / BUNDLE
    bundle_files = {p for p in bundle_dir.rglob("*")}

    result = run_cli(
        BUNDLE,
        [
            "--config_file",
            "['configs/common.json','configs/train.json']",
            "--logging_file",
            "configs/logging.conf",
            "--output_dir",
            str(out),
            "--dataset_dir",
            str(data),
            "--tracking_enabled",
            "true",
            "--tracking_uri",
            secret_uri,
            "--train#handlers#3#pseudonym_key",
            KEY,
            "--on_missing",
            "skip",
            "--on_error",
            "skip",
            "--image_size",
            "64",
            "--max_epochs",
            "2",
            "--epoch_length",
            "2",
            "--batch_size",
            "2",
            "--num_workers",
            "0",
            "--grid_images",
            "2",
            "--num_inference_steps",
            "2",
            "--grid_interval",
            "1",
            "--provenance_top_k",
            "2",
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + "\n----- stderr -----\n" + result.stderr[-5000:]

    # ---- the pipeline really logged what it should (the search below is not vacuous)
    printed = result.stdout + result.stderr
    assert "skipped 1 of 6 rows of train.csv whose image file does not exist (rows 7)" in printed  # the missing file
    assert "datalist row 6" in printed  # the corrupt file, named by its row
    record = json.loads((out / "mlflow_run.json").read_text())
    assert f"MLflow: run {record['run_id']}" in result.stdout  # the run's log is what was captured
    assert record["tracking_uri"] == server_uri.replace("http://", "http://***@")  # no credentials, still useful
    client = mlflow.MlflowClient(tracking_uri=server_uri)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    logged = {
        a.path
        for d in ("", "config", "data", "grids", "provenance/final")
        for a in client.list_artifacts(run.info.run_id, d)
    }
    assert {
        "config/bundle_config.json",
        "data/fingerprint.json",
        "provenance/final/provenance.json",
        "provenance/final/provenance.png",
    } <= logged, logged
    assert any(p.startswith("grids/") for p in logged), logged
    params = run.data.params
    assert params["image_size"] == "64" and run.data.tags["data.num_items"] == "5"  # 4 good + the corrupt one
    assert (
        params["dataset_dir"] == params["output_dir"] == "<path>" and params["tracking_uri"] == record["tracking_uri"]
    )
    config = json.loads(
        Path(client.download_artifacts(run.info.run_id, "config/bundle_config.json", str(tmp_path))).read_text()
    )
    assert config["train"]["handlers"][3]["pseudonym_key"] == "<redacted>"
    tables = list((server_dir / "artifacts").rglob("provenance/final/provenance.json"))
    assert len(tables) == 1, tables
    table = json.loads(tables[0].read_text())
    pseudonyms = [patch["image"] for row in table["prototypes"] for patch in row["patches"]]
    assert pseudonyms and all(p.startswith("img-") for p in pseudonyms)
    key = Pseudonymizer(KEY)  # the key given in the config made the pseudonyms
    assert table["pseudonym_key_id"] == key.key_id == run.data.tags["pseudonym_key_id"]
    mapped = key.map_back(pseudonyms, ids)  # the ids that named the patients reached provenance, as pseudonyms
    assert all(any(m.startswith(p["PatientID"] + "/") for p in PATIENTS) for m in mapped.values()), mapped
    version = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert version.run_id == run.info.run_id and str(version.version) == str(record["model_version"])
    assert list((server_dir / "artifacts").rglob("MLmodel")), "the logged model's files are not in the server's store"
    # every table of the store is readable: the search below sees the database's real content
    with sqlite3.connect(server_dir / "store.db") as db:
        tables_in_db = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "runs" in tables_in_db and "model_versions" in tables_in_db
        assert db.execute("SELECT count(*) FROM params").fetchone()[0] > 10

    # ---- the search
    needles = _needles(headers)
    for what, uids in bad.items():  # the bad rows' paths name the patients too
        for keyword, uid in uids.items():
            needles.append(Needle(f"{keyword} of the {what} file", uid, in_path=True))
    needles += [
        Needle("tracking user", USER),
        Needle("tracking token", TOKEN),
        Needle("pseudonym key", KEY),
        Needle("data folder", data.name, in_path=True),
    ]
    search = Search(needles)
    # the control: the same routine finds the identifiers in the raw data (headers, CSV, file names)
    control = Search(needles)
    for path in sorted(data.rglob("*.dcm")):
        hits = {n.what for n in control.file(path)}
        if path.stat().st_size < 100:  # the corrupt file names its patient only
            assert "PatientID" in hits, (path, hits)
            continue
        assert {
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "StudyDate",
            "StudyTime",
            "InstitutionName",
            "ReferringPhysicianName",
            "AccessionNumber",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
            "DeviceSerialNumber",
            "private tag",
        } <= hits, (path, hits)
    assert {n.what for n in control.file(data / "train.csv")} >= {
        "PatientID",
        "StudyInstanceUID",
        "SOPInstanceUID",
        "SOPInstanceUID of the missing file",
    }
    assert {n.what for n in control.blob("ids", "\n".join(ids).encode())} >= {"PatientID", "SOPInstanceUID (tail)"}
    assert {n.what for n in control.blob("argv", " ".join([secret_uri, KEY, str(data)]).encode())} == {
        "tracking user",
        "tracking token",
        "pseudonym key",
        "data folder",
    }
    assert not {n.what for n in control.blob("a float", b"[-0.019450317, 0.1945031712, 3.219450317e-05]")}
    assert {n.what for n in control.blob("a date", b'{"birth": "19450317"}')} == {"PatientBirthDate"}

    # what the run printed
    search.blob("stdout of the training run", result.stdout.encode())
    search.blob("stderr of the training run", result.stderr.encode())
    # the whole MLflow store (database and every artifact, the logged and registered model included), and every
    # file under the output folder: mlflow_run.json, checkpoints/, grids/, cache/ and any log file
    files = sorted(p for p in [*server_dir.rglob("*"), *out.rglob("*")] if p.is_file())
    assert server_dir / "store.db" in files and out / "mlflow_run.json" in files
    assert any(p.suffix == ".pt" for p in files) and any(p.parent.name == "cache" for p in files)
    assert not (out / "pseudonym.key").exists()  # the key came from the config
    cached_with_ids = []
    for path in files:
        # The PersistentDataset cache is the training machine's local copy of the transformed datalist items: an
        # item keeps its "id" (the CSV Path, which names the PatientID / UIDs of the PACS folders) because the
        # provenance pass needs it to compute the pseudonyms. So the cache may hold what the CSV already holds (it
        # is as sensitive as the dataset and stays with it, it is never logged), but nothing from the DICOM headers
        # beyond that. Checkpoints, the store and the logs get no such allowance.
        local = path.is_relative_to(out) and path.relative_to(out).parts[0] == "cache"
        hits = search.file(path, allow_path_ids=local)
        if local and hits:
            cached_with_ids.append(path.name)
    # a run must not write anything into the bundle folder (it is its working directory): e.g. ./mlruns
    new_in_bundle = sorted(p for p in bundle_dir.rglob("*") if p not in bundle_files and "__pycache__" not in p.parts)
    assert not new_in_bundle, new_in_bundle
    print(
        f"searched {len(needles)} identifier strings in {search.num_files} files/streams, "
        f"{search.num_bytes / 2**20:.1f} MiB; cache files holding datalist ids: {len(cached_with_ids)}"
    )
    assert not search.found, "patient identifiers, paths or secrets leaked:\n" + "\n".join(search.found)


def test_non_conformant_header_values_do_not_reach_the_log(tmp_path):
    """Real exports carry non-conformant values (a UID with letters, ...); reading such a file for training must
    not echo them into the log. Same reader and transform chain as the bundle (``medical_image_transforms``)."""
    import logging
    import warnings

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

    from monai_patronus.data import medical_image_transforms

    bad_uid = "1.2.840.113619.QX7731.20190611"  # letters: not a valid UI value
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.PatientName, ds.PatientID, ds.Modality = "Quixote^Dulcinea", "PIDQX7731", "DX"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when the value is set; the file is written as is
        ds.StudyInstanceUID = bad_uid
        ds.set_pixel_data((_radiograph(0, (32, 32)) * 4095).astype(np.uint16), "MONOCHROME2", 12)
        ds.save_as(str(tmp_path / "image.dcm"), enforce_file_format=True)

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.lines = []

        def emit(self, record):
            self.lines.append(f"{record.name}: {record.getMessage()}")

    root, collect = logging.getLogger(), Collect()
    root.addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            item = medical_image_transforms(spatial_dims=2, image_size=16)(
                {"image": str(tmp_path / "image.dcm"), "id": "x"}
            )
    finally:
        root.removeHandler(collect)
    assert tuple(item["image"].shape) == (1, 16, 16)
    text = "\n".join(collect.lines + [str(w.message) for w in caught])
    assert "QX7731" not in text, text
