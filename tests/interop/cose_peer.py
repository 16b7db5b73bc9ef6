#!/usr/bin/env python3
"""An independent YM1 implementation, written from the YM1 format documented in src/verification/code.rs alone.

It uses pycose (COSE_Sign1 / COSE_Mac0 for EdDSA, ES256, HMAC 256/256), cbor2, the `base45`
package and gmssl (SM2 with SM3, signer ID 1234567812345678) -- no code from yima-gate.

  cose_peer.py mint --iat SECONDS      print {"trust": [...], "codes": [...]} for every alg
  cose_peer.py check < request.json    verify codes minted elsewhere; print results
  cose_peer.py vectors FILE            check the signatures of tests/vectors/ym1-vectors.json
"""
import base64
import json
import os
import secrets
import sys

import base45
import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from gmssl import sm2
from pycose.algorithms import EdDSA, Es256, HMAC256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key, OKPKey, SymmetricKey
from pycose.keys.curves import P256, Ed25519
from pycose.messages import CoseMessage, Mac0Message, Sign1Message

SM2_ALG = -65701
YMTB = -65537


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def claims(kind, iat, svc):
    ymtb = {1: 1 if kind == "dynamic" else 2, 2: svc, 3: ["GATE-1"], 4: 1, 5: ["B-1", "B-2"]}
    if kind == "static":
        ymtb.update({6: "CAT-PY", 7: "SN-42", 8: 1})
    return {
        1: "HLJ-YMTB",
        2: secrets.token_bytes(16),
        4: iat + (60 if kind == "dynamic" else 86400 * 365),
        6: iat,
        7: secrets.token_bytes(12),
        YMTB: ymtb,
    }


def text_of(cose_bytes):
    return "YM1:" + base45.b45encode(cose_bytes).decode()


def sm2_keypair():
    """A key pair whose gmssl arithmetic is sound: gmssl 3.2.2's point routines fail for some
    scalars (a None point, or a wrong public key, about 1 key in 50), so a key is kept only if
    it signs and verifies a probe with gmssl itself."""
    n = int(sm2.default_ecc_table["n"], 16)
    for _ in range(20):
        d = secrets.randbelow(n - 2) + 1
        d_hex = "%064x" % d
        try:
            pub_hex = sm2.CryptSM2(private_key=d_hex, public_key="")._kg(d, sm2.default_ecc_table["g"])
            if not pub_hex or len(pub_hex) != 128:
                continue
            probe = secrets.token_bytes(32)
            sig = sm2.CryptSM2(private_key=d_hex, public_key=pub_hex).sign_with_sm3(probe)
            if sig and sm2.CryptSM2(private_key="", public_key=pub_hex).verify_with_sm3(sig, probe):
                return d_hex, pub_hex
        except TypeError:
            continue
    raise RuntimeError("gmssl could not make a sound SM2 key in 20 tries")


def sm2_sign(d_hex, pub_hex, data):
    """Signs; retried with a fresh nonce when gmssl's arithmetic fails for one (see above)."""
    signer = sm2.CryptSM2(private_key=d_hex, public_key=pub_hex)
    verifier = sm2.CryptSM2(private_key="", public_key=pub_hex)
    for _ in range(20):
        try:
            sig = signer.sign_with_sm3(data)
            if sig and verifier.verify_with_sm3(sig, data):
                return bytes.fromhex(sig)
        except TypeError:
            continue
    raise RuntimeError("gmssl could not sign in 20 tries")


def sig_structure(protected, payload):
    return cbor2.dumps(["Signature1", protected, b"", payload])


def entry(kid, alg, key):
    return {
        "kid": b64u(kid),
        "alg": alg,
        "key": b64u(key),
        "kinds": ["dynamic", "static"],
        "not_before": "2020-01-01T00:00:00Z",
        "not_after": "2040-01-01T00:00:00Z",
    }


def mint(iat):
    trust, codes = [], []

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_pub = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ed_priv = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                               serialization.NoEncryption())
    ed_key = OKPKey(crv=Ed25519, x=ed_pub, d=ed_priv)
    trust.append(entry(b"py-ed", "EdDSA", ed_pub))

    p = ec.generate_private_key(ec.SECP256R1())
    nums = p.private_numbers()
    x = nums.public_numbers.x.to_bytes(32, "big")
    y = nums.public_numbers.y.to_bytes(32, "big")
    p_key = EC2Key(crv=P256, x=x, y=y, d=nums.private_value.to_bytes(32, "big"))
    trust.append(entry(b"py-p256", "ES256", b"\x04" + x + y))

    secret = secrets.token_bytes(32)
    h_key = SymmetricKey(k=secret)
    trust.append(entry(b"py-hmac", "HMAC256", secret))

    d_hex, pub_hex = sm2_keypair()
    trust.append(entry(b"py-sm2", "SM2", bytes.fromhex("04" + pub_hex)))

    for kind in ("dynamic", "static"):
        for alg_name, kid, key, alg in (("EdDSA", b"py-ed", ed_key, EdDSA), ("ES256", b"py-p256", p_key, Es256)):
            msg = Sign1Message(phdr={Algorithm: alg, KID: kid}, payload=cbor2.dumps(claims(kind, iat, "SVC-PY")))
            msg.key = key
            codes.append({"alg": alg_name, "kind": kind, "text": text_of(msg.encode(tag=True))})
        msg = Mac0Message(phdr={Algorithm: HMAC256, KID: b"py-hmac"}, payload=cbor2.dumps(claims(kind, iat, "SVC-PY")))
        msg.key = h_key
        codes.append({"alg": "HMAC256", "kind": kind, "text": text_of(msg.encode(tag=True))})
        protected = cbor2.dumps({1: SM2_ALG, 4: b"py-sm2"})
        payload = cbor2.dumps(claims(kind, iat, "SVC-PY"))
        sig = sm2_sign(d_hex, pub_hex, sig_structure(protected, payload))
        cose = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))
        codes.append({"alg": "SM2", "kind": kind, "text": text_of(cose)})
    return {"trust": trust, "codes": codes}


def check_one(text, trust):
    assert text[:4].upper() == "YM1:", "prefix"
    raw = base45.b45decode(text[4:])
    outer = cbor2.loads(raw)
    assert isinstance(outer, cbor2.CBORTag) and outer.tag in (17, 18), "tag"
    protected_bytes, unprotected, payload, sig = outer.value
    protected = cbor2.loads(protected_bytes)
    alg, kid = protected[1], protected[4]
    assert unprotected == {}, "unprotected header must be empty"
    keys = [e for e in trust if unb64u(e["kid"]) == kid]
    assert keys, "no key for kid"
    ok = False
    for e in keys:
        k = unb64u(e["key"])
        if alg == -8 and e["alg"] == "EdDSA":
            msg = CoseMessage.decode(raw)
            msg.key = OKPKey(crv=Ed25519, x=k)
            ok = ok or msg.verify_signature()
        elif alg == -7 and e["alg"] == "ES256":
            assert k[0] == 4 and len(k) == 65, "uncompressed SEC1"
            msg = CoseMessage.decode(raw)
            msg.key = EC2Key(crv=P256, x=k[1:33], y=k[33:])
            ok = ok or msg.verify_signature()
        elif alg == 5 and e["alg"] == "HMAC256":
            assert outer.tag == 17
            msg = CoseMessage.decode(raw)
            msg.key = SymmetricKey(k=k)
            ok = ok or msg.verify_tag()
        elif alg == SM2_ALG and e["alg"] == "SM2":
            assert outer.tag == 18 and len(sig) == 64
            verifier = sm2.CryptSM2(private_key="", public_key=k[1:].hex())
            ok = ok or bool(verifier.verify_with_sm3(sig.hex(), sig_structure(protected_bytes, payload)))
    c = cbor2.loads(payload)
    y = c[YMTB]
    assert isinstance(c[1], str) and isinstance(c[2], bytes), "iss/sub types"
    assert 8 <= len(c[7]) <= 16, "cti length"
    assert y[1] in (1, 2), "kind"
    return {
        "ok": ok,
        "alg": alg,
        "iss": c[1],
        "iat": c[6],
        "exp": c[4],
        "kind": y[1],
        "svc": y[2],
        "scn": y.get(3),
        "cat": y.get(6),
        "sn": y.get(7),
    }


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "mint" and sys.argv[2] == "--iat":
        print(json.dumps(mint(int(sys.argv[3]))))
    elif len(sys.argv) == 2 and sys.argv[1] == "check":
        req = json.load(sys.stdin)
        out = []
        for code in req["codes"]:
            try:
                out.append(check_one(code, req["trust"]))
            except Exception as e:  # report, do not hide: the Rust side asserts on it
                out.append({"ok": False, "error": repr(e)})
        print(json.dumps(out))
    elif len(sys.argv) == 3 and sys.argv[1] == "vectors":
        with open(sys.argv[2], encoding="utf-8") as f:
            vf = json.load(f)
        out = []
        for v in vf["vectors"]:
            # Signature validity is all an independent stack can judge without the rules.
            want = v["expect_reason"] not in ("malformed", "unknown_key", "bad_signature")
            try:
                got = check_one(v["text"], vf["keys"])["ok"]
            except Exception:  # malformed or unknown kid
                got = False
            out.append({"name": v["name"], "signature_valid": got, "expected": want})
        print(json.dumps(out))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
