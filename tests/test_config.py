"""Configuration errors reported by `apache2 -t`, and directives that only change startup."""

import pytest

# About embedded mode itself or plain Apache: not repeated in daemon mode.
pytestmark = pytest.mark.embedded_only


@pytest.fixture
def cfg(apache_factory):
    return apache_factory()


def test_valid_config_passes(cfg):
    script = cfg.app("echo.wsgi")
    rc, out = cfg.configtest(
        f"WSGIScriptAlias /app {script} process-group=%{{GLOBAL}} application-group=%{{GLOBAL}} "
        f"callable-object=application pass-authorization=On\n"
        "WSGIPassAuthorization On\nWSGIChunkedRequest On\nWSGIMapHEADToGET Auto\n"
        "WSGIScriptReloading On\nWSGITrustedProxyHeaders X-Forwarded-For\n"
        "WSGITrustedProxies 127.0.0.1 10.0.0.0/8\nWSGIEnableSendfile Off\nWSGIErrorOverride Off\n"
        "WSGIRestrictStdin On\nWSGIRestrictStdout Off\nWSGIRestrictSignal On\n"
        "WSGIPythonOptimize 1\nWSGIDontWriteBytecode On\nWSGIPythonHashSeed 42\n"
        "WSGICallableObject application\nWSGIApplicationGroup %{GLOBAL}\n"
        # Accepted as mod_wsgi 6 accepts them (no effect here, see the README).
        "WSGIAcceptMutex fcntl\nWSGIFreeThreading Off\nWSGISlowRequests 2.5\n"
        "WSGITelemetryService unix:/run/telemetry.sock interval=10\n"
        "WSGITelemetryOptions +CaptureUserAgent\nWSGINewRelicConfigFile /etc/newrelic.ini\n"
        "<Location /x>\nWSGIUserAuthoritative Off\nWSGIGroupAuthoritative On\n</Location>\n")
    assert rc == 0, out
    assert "Syntax OK" in out


@pytest.mark.parametrize("fragment,directive,needle", [
    ("WSGIDispatchScript /tmp/x.py bogus=1\n", "WSGIDispatchScript", "application-group="),
    ("WSGIDaemonProcess x bogus=1\n", "WSGIDaemonProcess", "unknown option 'bogus'"),
    ("WSGIFreeThreading On\n", "WSGIFreeThreading", "RW0044"),
    ("WSGIAcceptMutex spinlock\n", "WSGIAcceptMutex", "not a mutex mechanism"),
    ("WSGISlowRequests soon\n", "WSGISlowRequests", None),
    ("WSGITelemetryService udp:127.0.0.1:9\n", "WSGITelemetryService", "unix:"),
    ("<Location /x>\nWSGIAuthUserScript /x.wsgi process-group=a\n</Location>\n",
     "WSGIAuthUserScript", "application-group="),
    ("WSGIDaemonProcess x chroot=srv\n", "WSGIDaemonProcess", "invalid value"),
    ("WSGIScriptAlias /x\n", "WSGIScriptAlias", None),
    ("WSGIPassAuthorization maybe\n", "WSGIPassAuthorization", None),
    ("WSGIChunkedRequest sometimes\n", "WSGIChunkedRequest", None),
    ("WSGIMapHEADToGET Never\n", "WSGIMapHEADToGET", None),
    ("WSGIPythonOptimize 7\n", "WSGIPythonOptimize", None),
    ("WSGITrustedProxies not-an-ip\n", "WSGITrustedProxies", None),
    ("WSGIScriptAlias /x /tmp/x.wsgi bogus-option=1\n", "WSGIScriptAlias", None),
    ("WSGIScriptAlias /x /tmp/x.wsgi process-group=other\n", "WSGIScriptAlias", None),
    ("WSGIImportScript /tmp/x.py\n", "WSGIImportScript", None),
])
def test_bad_config_fails_naming_directive(cfg, fragment, directive, needle):
    rc, out = cfg.configtest(fragment)
    assert rc != 0, out
    assert directive in out, out
    if needle:
        assert needle in out, out
    assert "Syntax OK" not in out


def test_every_mod_wsgi_directive_and_option_is_accepted(cfg):
    """No mod_wsgi 6 directive or daemon option answers RW0002 any more: the ones that were
    refused last (each implemented or accepted as documented) pass apachectl -t together."""
    rc, out = cfg.configtest(
        "WSGIHandlerScript h /tmp/x.py process-group=%{GLOBAL}\n"
        "WSGIDispatchScript /tmp/d.py\nWSGIAcceptMutex Default\nWSGIServerMetrics On\n"
        "WSGITelemetryService unix:/tmp/t.sock\nWSGITelemetryOptions None\n"
        "WSGISlowRequests 3\nWSGIPassApacheRequest On\nWSGINewRelicEnvironment prod\n"
        "<Location /x>\nWSGIAccessScript /tmp/a.py\nWSGIAuthUserScript /tmp/a.py\n"
        "WSGIAuthGroupScript /tmp/a.py\nWSGIGroupAuthoritative Off\n</Location>\n"
        "WSGIDaemonProcess all chroot=/ interrupt-timeout=5 send-buffer-size=8192 "
        "receive-buffer-size=8192 response-socket-timeout=5 response-flush-delay=10 "
        "script-user=#0 server-metrics=On\n")
    assert rc == 0, out
    assert "RW0002" not in out and "Syntax OK" in out, out


def test_bad_directive_message_has_code(cfg):
    rc, out = cfg.configtest("WSGIPassAuthorization maybe\n")
    assert rc != 0
    assert "RW0001" in out, out
    assert "On" in out and "Off" in out, "message should say what is accepted"
