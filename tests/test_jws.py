import json

import pytest

from workbench import jws


@pytest.mark.parametrize("alg", jws.ALLOWED_ALGS)
def test_sign_then_verify_round_trips_for_every_allowed_algorithm(alg):
    key = jws.AccountKey.generate(alg)
    body = key.sign("https://127.0.0.1:8443/acme/profile/p/new-account", "nonce-1",
                    {"termsOfServiceAgreed": True})
    parsed = jws.parse(body)
    assert parsed.protected == {"alg": alg, "nonce": "nonce-1", "jwk": key.jwk,
                                "url": "https://127.0.0.1:8443/acme/profile/p/new-account"}
    assert parsed.payload == {"termsOfServiceAgreed": True}
    jws.verify_signature(parsed, jws.key_from_jwk(parsed.protected["jwk"]))


def test_es256_signature_is_raw_r_s_not_der():
    key = jws.AccountKey.generate("ES256")
    parsed = jws.parse(key.sign("https://h/x", "n", None, kid="https://h/acme/account/a"))
    assert len(parsed.signature) == 64
    assert parsed.payload is None and "jwk" not in parsed.protected


def test_tampered_payload_fails_as_unauthorized():
    key = jws.AccountKey.generate("ES256")
    outer = json.loads(key.sign("https://h/x", "n", {"a": 1}))
    outer["payload"] = jws.b64u(b'{"a":2}')
    with pytest.raises(jws.JWSError) as err:
        jws.verify_signature(jws.parse(json.dumps(outer).encode()), key.private.public_key())
    assert err.value.kind == "unauthorized"


def test_es384_and_hs256_are_malformed():
    key = jws.AccountKey.generate("ES256")
    outer = json.loads(key.sign("https://h/x", "n", {}))
    header = json.loads(jws.b64u_decode(outer["protected"]))
    for alg in ("ES384", "HS256", "none"):
        outer["protected"] = jws.b64u(json.dumps(header | {"alg": alg}).encode())
        with pytest.raises(jws.JWSError) as err:
            jws.verify_signature(jws.parse(json.dumps(outer).encode()), key.private.public_key())
        assert err.value.kind == "malformed"


def test_thumbprint_matches_rfc7638_example():
    # RFC 7638 section 3.1's RSA key and its published thumbprint
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")}
    assert jws.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_malformed_bodies_are_refused():
    for body in (b"not json", b"{}", b'{"protected":"!!","payload":"","signature":""}'):
        with pytest.raises(jws.JWSError) as err:
            jws.parse(body)
        assert err.value.kind == "malformed"
