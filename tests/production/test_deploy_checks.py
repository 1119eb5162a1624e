"""``manage.py check --deploy`` and the OpenAPI schema, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

from tests.production.support import clean_env, manage, needs_postgresql, production_env


@needs_postgresql
def test_check_deploy_is_silent_with_the_documented_production_env(tmp_path: Path) -> None:
    # deploy/gpuconfig.env.example: plain HTTP on a LAN (GPUCONFIG_HTTPS=0).
    result = manage("check", "--deploy", "--fail-level", "DEBUG", env=production_env(tmp_path))

    assert result.returncode == 0, result.stderr
    # Exactly the four HTTPS-only warnings are silenced over plain HTTP, nothing else.
    assert result.stdout.strip() == "System check identified no issues (4 silenced)."
    assert result.stderr == ""


@needs_postgresql
def test_check_deploy_is_silent_over_https_with_nothing_silenced(tmp_path: Path) -> None:
    env = production_env(tmp_path, GPUCONFIG_HTTPS="1")

    result = manage("check", "--deploy", "--fail-level", "DEBUG", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


@needs_postgresql
def test_check_deploy_names_an_https_setting_the_operator_turned_off(tmp_path: Path) -> None:
    env = production_env(tmp_path, GPUCONFIG_HTTPS="1", DJANGO_SESSION_COOKIE_SECURE="0")

    result = manage("check", "--deploy", env=env)

    assert "security.W012" in result.stderr
    assert "SESSION_COOKIE_SECURE is not set to True" in result.stderr


@needs_postgresql
def test_a_bad_security_value_stops_the_app_naming_the_variable(tmp_path: Path) -> None:
    env = production_env(tmp_path, DJANGO_X_FRAME_OPTIONS="ALLOWALL")

    result = manage("check", env=env)

    assert result.returncode == 1
    assert "DJANGO_X_FRAME_OPTIONS='ALLOWALL' must be one of DENY, SAMEORIGIN" in result.stderr


def test_openapi_schema_validates_without_a_single_warning(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yml"
    # Schema generation needs no database: the embedded defaults, in a folder of its own.
    env = {**clean_env(), "GPUCONFIG_DATA_DIR": str(tmp_path)}
    assert manage("prepare_data_dir", env=env).returncode == 0

    result = manage("spectacular", "--validate", "--fail-on-warn", "--file", str(schema), env=env)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "/api/system/gpu-config/status:" in schema.read_text()
    assert "/api/system/gpu-config/versions:" in schema.read_text()
