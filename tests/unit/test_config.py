from pathlib import Path

import pytest

from dicomnode.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_with_documented_defaults():
    s = load_settings(REPO / "configs" / "dicomnode.toml", environ={})
    assert s.node.ae_title == "DICOMNODE" and s.node.port == 11112
    assert s.api.host == "127.0.0.1" and s.api.token == ""
    assert s.model.package == "" and s.database.url == ""
    assert s.database_url.startswith("sqlite:///") and s.node.data_dir.is_absolute()


def test_every_setting_appears_in_the_shipped_config_with_a_comment():
    from dicomnode.config import Settings
    from dicomnode.destinations import Destination, DicomwebDestination

    text = (REPO / "configs" / "dicomnode.toml").read_text()
    lines = text.splitlines()
    sections = {name: [f.annotation] for name, f in Settings.model_fields.items()}
    sections["destinations"] = [Destination, DicomwebDestination]
    for section, models in sections.items():
        keys = [key for model in models for key in model.model_fields]
        for key in keys:
            hits = [i for i, ln in enumerate(lines) if ln.lstrip("# ").startswith(f"{key} =")]
            assert hits, f"{section}.{key} is not in configs/dicomnode.toml"
            i = hits[0]
            while i > 0 and lines[i - 1].strip() and not lines[i - 1].lstrip().startswith("#"):
                i -= 1
            assert (
                i == 0 or lines[i - 1].lstrip().startswith("#") or lines[i].lstrip().startswith("#")
            ), f"{section}.{key} has no comment"


def test_environment_overrides_each_key(tmp_path):
    env = {
        "DICOMNODE_NODE__PORT": "11999",
        "DICOMNODE_NODE__ALLOWED_CALLING_AE_TITLES": '["ORTHANC", "MODALITY"]',
        "DICOMNODE_API__TOKEN": "s3cret",
        "DICOMNODE_MODEL__DEVICE": "cpu",
        "UNRELATED": "x",
    }
    s = load_settings(None, environ=env)
    assert s.node.port == 11999
    assert s.node.allowed_calling_ae_titles == ["ORTHANC", "MODALITY"]
    assert s.api.token == "s3cret" and s.model.device == "cpu"


def test_empty_path_variables_mean_unset():
    # Compose files often pass `VAR=` through: that must not become Path(".").
    keys = ("SPOOL_DIR", "TLS_CERTIFICATE", "TLS_PRIVATE_KEY", "TLS_CA_CERTIFICATE",
            "TLS_CLIENT_CA_CERTIFICATE")  # fmt: skip
    s = load_settings(None, environ={f"DICOMNODE_NODE__{key}": "" for key in keys})
    assert all(getattr(s.node, key.lower()) is None for key in keys)
    assert s.spool_dir == s.node.data_dir / "spool"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DICOMNODE_NODE__PORT": "99999"}, "node.port"),
        ({"DICOMNODE_NODE__AE_TITLE": "A" * 17}, "node.ae_title"),
        ({"DICOMNODE_MODEL__DEVICE": "tpu"}, "model.device"),
        ({"DICOMNODE_NODE__UID_ROOT": "1.2.x"}, "node.uid_root"),
        ({"DICOMNODE_NODE__SURPRISE": "1"}, "node.surprise"),
        (
            {"DICOMNODE_NODE__MIN_RECEIVE_BYTES_PER_SECOND": "-1"},
            "node.min_receive_bytes_per_second",
        ),
        ({"DICOMNODE_NODE__RECEIVE_RATE_WINDOW_SECONDS": "0"}, "node.receive_rate_window_seconds"),
        ({"DICOMNODE_NODE__MAX_NEGOTIATING": "0"}, "node.max_negotiating"),
    ],
)
def test_invalid_values_name_the_key(env, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(None, environ=env)


def test_a_per_address_budget_above_the_total_is_refused():
    env = {
        "DICOMNODE_NODE__MAX_NEGOTIATING": "4",
        "DICOMNODE_NODE__MAX_NEGOTIATING_PER_ADDRESS": "5",
    }
    with pytest.raises(ConfigError, match="max_negotiating_per_address must not exceed"):
        load_settings(None, environ=env)


def test_api_beyond_loopback_without_token_is_refused():
    with pytest.raises(ConfigError, match="token"):
        load_settings(None, environ={"DICOMNODE_API__HOST": "0.0.0.0"})
    s = load_settings(None, environ={"DICOMNODE_API__HOST": "0.0.0.0", "DICOMNODE_API__TOKEN": "t"})
    assert s.api.host == "0.0.0.0"


def test_bad_toml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nport = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_destinations_from_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[destinations]]\nname="pacs"\nae_title="ORTHANC"\nhost="127.0.0.1"\nport=4242\n'
        '[[destinations]]\nname="pacs"\nae_title="B"\nhost="h"\nport=1\n'
    )
    with pytest.raises(ConfigError, match="unique"):
        load_settings(cfg, environ={})


def test_runtime_names_are_defined_once():
    """`model.runtime` accepts exactly the runtimes the model package runs: one enum, not a
    copy of its names that could drift."""
    from dicomnode.config import ModelSettings
    from dicomnode.model.runtime import Runtime

    assert ModelSettings.model_fields["runtime"].annotation is Runtime
    for name in Runtime:
        assert load_settings(environ={"DICOMNODE_MODEL__RUNTIME": name}).model.runtime is name


def test_a_dicomweb_destination_beside_a_dimse_one(tmp_path):
    from dicomnode.destinations import Destination, DicomwebDestination

    config = tmp_path / "c.toml"
    config.write_text(
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.2"\nport = 104\n'
        '[[destinations]]\ntype = "dicomweb"\nname = "cloud"\n'
        'url = "https://pacs.example/dicom-web/"\nauth = "bearer"\ntoken = "s3cret-token"\n'
        'tls_ca_certificate = "certs/pacs-ca.crt"\n'
    )
    dimse, web = load_settings(config, environ={}).destinations
    assert isinstance(dimse, Destination) and dimse.type == "dimse"  # no type: DIMSE, as before
    assert isinstance(web, DicomwebDestination) and web.url == "https://pacs.example/dicom-web"
    assert web.token.get_secret_value() == "s3cret-token"
    assert web.tls_ca_certificate == tmp_path / "certs" / "pacs-ca.crt"  # from the file's folder
    assert "s3cret-token" not in repr(web) and "s3cret-token" not in str(web)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('url = "ftp://pacs.example"', "URL without credentials"),
        ('url = "https://user:pw@pacs.example"', "without credentials"),
        ('url = "https://pacs.example"\nauth = "basic"', "needs username"),
        ('url = "https://pacs.example"\nauth = "bearer"', "needs token"),
        ('url = "http://pacs.example"\nauth = "bearer"\ntoken = "t"', "only sent over https"),
        ('host = "pacs.example"\nport = 104\nae_title = "X"\nurl = "https://p"', "Extra inputs"),
    ],
)
def test_dicomweb_destinations_refuse_what_cannot_work_or_leaks(tmp_path, fields, message):
    config = tmp_path / "c.toml"
    config.write_text(f'[[destinations]]\ntype = "dicomweb"\nname = "web"\n{fields}\n')
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path, monkeypatch):
    """Not from the working directory: a command run elsewhere finds the node's files."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "node.toml").write_text(
        '[node]\ndata_dir = "state"\nspool_dir = "../spool"\n'
        'tls_certificate = "tls/node.crt"\ntls_private_key = "/abs/node.key"\n'
        '[model]\npackage = "models/fracture"\n'
        '[database]\nurl = "sqlite:///db/node.db"\n'
    )
    monkeypatch.chdir(tmp_path / "..")
    s = load_settings(folder / "node.toml", environ={})
    assert s.node.data_dir == folder / "state"
    assert s.spool_dir == folder / ".." / "spool"
    assert s.node.tls_certificate == folder / "tls" / "node.crt"
    assert s.node.tls_private_key == Path("/abs/node.key")
    assert s.model.package == str(folder / "models" / "fracture")
    assert s.database_url == f"sqlite:///{folder / 'db' / 'node.db'}"
    default_db = load_settings(folder / "node.toml", environ={"DICOMNODE_DATABASE__URL": ""})
    assert default_db.database_url == f"sqlite:///{(folder / 'state' / 'dicomnode.db').resolve()}"
    # The shipped file keeps its state in var/ at the top of the repository, from anywhere.
    assert load_settings(REPO / "configs" / "dicomnode.toml", environ={}).data_dir.resolve() == (
        REPO / "var"
    )
