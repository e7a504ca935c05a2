"""ACME pieces the ACME scenarios share: the default profile, its URL and k6's ACME iteration.

The ACME error namespace is the driver's (:data:`workbench.driver.scripted.ACME_ERROR`), which
strips it from every problem type it counts.
"""

from __future__ import annotations

from workbench.driver import RequestTemplate
from workbench.scenarios import NAME, Param

DEFAULT_PROFILE = "prof-standard-tls"  # exists in certctl's demo seed and in the stand-in
PROFILE_ID = Param("profile_id", NAME, DEFAULT_PROFILE, "ACME profile in the URL path")


def profile_base(profile_id: str) -> str:
    """The path every ACME URL of ``profile_id`` starts with."""
    return f"/acme/profile/{profile_id}"


def iteration(profile_id: str, cert_id: str, ari_expect: tuple[int, ...]
              ) -> tuple[RequestTemplate, ...]:
    """k6's ACME iteration: GET directory, HEAD new-nonce, GET renewal-info/<cert-id>."""
    base = profile_base(profile_id)
    return (RequestTemplate("GET", f"{base}/directory", "directory", expect=(200,)),
            RequestTemplate("HEAD", f"{base}/new-nonce", "new_nonce", expect=(200,)),
            RequestTemplate("GET", f"{base}/renewal-info/{cert_id}", "renewal_info",
                            expect=ari_expect))
