"""The OpenAPI document of `maskformer serve`, checked by schemathesis: requests generated from
it (valid and invalid fields, arbitrary bytes as the image) get no 500, and every answer matches
the documented status codes, content types and response schemas."""

from __future__ import annotations

import pytest

from tests._serve_support import PHOTO, load, running_server, save_tiny_checkpoint
from tests.conftest import requires_shared_data

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (test extra) missing")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

pytestmark = requires_shared_data


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from maskformer.serve.app import ServeLimits, create_app

    model, processor = load(save_tiny_checkpoint(tmp_path_factory.mktemp("serve_openapi")))
    limits = ServeLimits(max_upload_bytes=200_000, max_pixels=512 * 512)
    with running_server(create_app(model, processor, "tiny", limits)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same requests on every run
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_generated_requests_get_documented_answers(api):
    operations = [result.ok() for result in api.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == {
        "GET /healthz",
        "GET /v1/model",
        "POST /v1/segment",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @SETTINGS
        def check(case):
            # The schema cannot say "these bytes must be a decodable image", so a schema-valid
            # request may rightly get 400/422; every other built-in check applies.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_real_answers_match_the_response_schema(api, task):
    operation = api["/v1/segment"]["POST"]
    case = operation.Case(
        body={"image": PHOTO.read_bytes(), "task": task, "threshold": 0.2, "segment_map": True},
        media_type="multipart/form-data",
    )
    response = case.call_and_validate()  # all built-in checks, response schema included
    assert response.status_code == 200
