import pytest

from dicomnode.uids import DEFAULT_UID_ROOT, derive_uid, hash_uid, is_valid_uid


def test_derived_uid_is_valid_deterministic_and_distinct():
    a = derive_uid(DEFAULT_UID_ROOT, "1.2.3", "v1", "sr")
    assert is_valid_uid(a) and a.startswith(DEFAULT_UID_ROOT)
    assert a == derive_uid(DEFAULT_UID_ROOT, "1.2.3", "v1", "sr")
    assert a != derive_uid(DEFAULT_UID_ROOT, "1.2.3", "v1", "sc")
    assert a != derive_uid(DEFAULT_UID_ROOT, "1.2.3", "v2", "sr")


def test_derived_uid_fits_64_chars_even_for_long_roots():
    root = "1." + "2." * 20
    uid = derive_uid(root, "x")
    assert len(uid) <= 64 and is_valid_uid(uid)


@pytest.mark.parametrize("root", ["1.2.abc.", "01.2.", "1." * 30])
def test_bad_roots_are_refused(root):
    with pytest.raises(ValueError):
        derive_uid(root, "x")


def test_hash_uid_is_salted_and_does_not_contain_the_uid():
    uid = "1.2.840.113619.2.55.3"
    h = hash_uid(uid, "salt-a")
    assert h != hash_uid(uid, "salt-b") and uid not in h and len(h) == 16
