"""A SoftHSM2 token for the PKCS#11 tests: made with softhsm2-util, keys made with python-pkcs11.

SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, once per process, so the token is
made once per test session and SOFTHSM2_CONF is set before any test loads the module.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from trustyard.crypto.pkcs11 import DEFAULT_MODULES

from .helpers import sh

TOKEN, PIN, SO_PIN = "trustyard-test", "1234", "5678"


def softhsm_module() -> str | None:
    """SoftHSM2's module if it and softhsm2-util are installed; in CI their absence fails."""
    module = next((m for m in DEFAULT_MODULES if Path(m).exists()), None)
    if module and shutil.which("softhsm2-util"):
        return module
    reason = "SoftHSM2 is not installed (apt-get install softhsm2; scripts/install-deps.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the PKCS#11 tests")
    pytest.skip(reason)


@dataclass
class Token:
    """A SoftHSM2 token holding P-384 key pairs 'vendor' (id 01) and 'root' (id 02)."""

    module: str
    dir: Path

    def uri(self, obj: str = "vendor", pin: str = PIN) -> str:
        return f"pkcs11:token={TOKEN};object={obj}?pin-value={pin}"


def make_token(tmp: Path) -> Token:
    module = softhsm_module()
    assert module is not None
    (tmp / "tokens").mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    sh(
        "softhsm2-util",
        "--init-token",
        "--free",
        "--label",
        TOKEN,
        "--pin",
        PIN,
        "--so-pin",
        SO_PIN,
    )

    import pkcs11
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(module).get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC,
            {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp384r1")},
            local=True,
        )
        for label, key_id in (("vendor", b"\x01"), ("root", b"\x02")):
            params.generate_keypair(store=True, label=label, id=key_id)
        p256 = session.create_domain_parameters(
            pkcs11.KeyType.EC,
            {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        p256.generate_keypair(store=True, label="p256", id=b"\x03")
    return Token(module, tmp)
