"""Migration 0004 on SQLite and PostgreSQL: old results get the model honestly known (the demo's
versions are recognisable, others stay "model unknown"), and a study's modalities drop the
node's own returning objects."""

from sqlalchemy import text

from dicomnode.store.db import create_db_engine, upgrade_schema


def _job(conn, n, study, *, state, modality="CR", version=None, reason=None):
    conn.execute(
        text(
            "INSERT INTO job (sop_instance_uid, sop_class_uid, study_instance_uid, "
            "series_instance_uid, modality, body_part, view_position, calling_ae_title, "
            "spool_path, state, reason, attempts, model_version, received_at) VALUES "
            "(:uid, '1.2', :study, '', :modality, '', '', 'SCU', 'p', :state, :reason, 0, "
            ":version, '2026-01-01 00:00:00')"
        ),
        {
            "uid": f"1.2.9.{n}",
            "study": study,
            "modality": modality,
            "state": state,
            "reason": reason,
            "version": version,
        },
    )


def _study(conn, uid, modalities):
    conn.execute(
        text(
            "INSERT INTO study (study_instance_uid, patient_name, patient_id, "
            "patient_birth_date, accession_number, study_date, study_time, study_description, "
            "modalities, body_part, first_received_at, last_received_at, report_version, "
            "reported_job_count) VALUES (:uid, '', '', '', '', '', '', '', :m, '', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', 1, 1)"
        ),
        {"uid": uid, "m": modalities},
    )


def test_old_rows_get_the_model_that_can_honestly_be_known(database_url):
    engine = create_db_engine(database_url)
    upgrade_schema(engine, "0003")
    with engine.begin() as conn:
        _study(conn, "1.1", "CR,OT,SR")  # demo result; the node's SR and SC came back
        _job(conn, 1, "1.1", state="CLASSIFIED", version="demo-tf_efficientnet_b0-seed0")
        _job(conn, 2, "1.1", state="SKIPPED", modality="OT", reason="own output")
        _job(conn, 3, "1.1", state="SKIPPED", modality="SR", reason="own output")
        _study(conn, "1.2", "DX")  # a package's result: its version, nothing else known
        _job(conn, 4, "1.2", state="CLASSIFIED", modality="DX", version="2026.1")
        _study(conn, "1.3", "CR")  # two models in one study: the study's model is unknown
        _job(conn, 5, "1.3", state="CLASSIFIED", version="demo-x-seed0")
        _job(conn, 6, "1.3", state="CLASSIFIED", version="2026.1")
    upgrade_schema(engine)
    with engine.connect() as conn:
        jobs = dict(conn.execute(text(
            "SELECT sop_instance_uid, model_trained FROM job WHERE state = 'CLASSIFIED'"
        )).all())  # fmt: skip
        studies = {
            row[0]: row[1:]
            for row in conn.execute(text(
                "SELECT study_instance_uid, modalities, model_name, model_version, "
                "model_trained FROM study"
            ))
        }  # fmt: skip
    assert jobs == {"1.2.9.1": False, "1.2.9.4": None, "1.2.9.5": False, "1.2.9.6": None}
    assert studies["1.1"] == (
        "CR", "dicomnode fracture triage", "demo-tf_efficientnet_b0-seed0", False,
    )  # fmt: skip
    assert studies["1.2"] == ("DX", None, "2026.1", None)
    assert studies["1.3"] == ("CR", None, None, None)
