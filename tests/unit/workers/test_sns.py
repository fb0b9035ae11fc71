from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.workers import SnsError, SnsVerifier, string_to_sign

ENVELOPE = {
    "Type": "Notification",
    "MessageId": "m-1",
    "TopicArn": "arn:aws:sns:us-east-1:123456789012:amazon-pay",
    "Message": '{"NotificationId":"n-1"}',
    "Timestamp": "2026-11-23T10:00:00.000Z",
    "SignatureVersion": "2",
    "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
}


def test_string_to_sign_follows_the_sns_key_order() -> None:
    assert string_to_sign(ENVELOPE) == (
        b'Message\n{"NotificationId":"n-1"}\nMessageId\nm-1\n'
        b"Timestamp\n2026-11-23T10:00:00.000Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:amazon-pay\nType\nNotification\n"
    )
    with_subject = {**ENVELOPE, "Subject": "hi"}
    assert b"MessageId\nm-1\nSubject\nhi\nTimestamp" in string_to_sign(with_subject)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/cert.pem",
        "https://sns.us-gov-west-1.amazonaws.com/cert.pem",
        "https://sns.ap-southeast-2.amazonaws.com/cert.pem",
    ],
)
def test_sns_hosts_are_trusted(url: str) -> None:
    SnsVerifier().check_cert_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
        "https://127.0.0.1:8480/_emulator/sns/cert.pem",
        "https://sns.s3.amazonaws.com/cert.pem",
        "https://sns.my-bucket.amazonaws.com/cert.pem",
        "https://sns.us-east-1.evil.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(SnsError) as caught:
        SnsVerifier().check_cert_url(url)
    assert caught.value.reason == "untrusted_certificate_host"


def test_an_explicitly_trusted_development_host_is_allowed() -> None:
    SnsVerifier(extra_cert_hosts=["127.0.0.1:8480"]).check_cert_url(
        "http://127.0.0.1:8480/_emulator/sns/cert.pem"
    )


@given(st.text(min_size=1, max_size=40))
def test_no_arbitrary_host_is_trusted(host: str) -> None:
    url = f"https://{host}/cert.pem"
    verifier = SnsVerifier()
    try:
        verifier.check_cert_url(url)
    except SnsError:
        return
    assert host.startswith("sns.")
    assert ".amazonaws.com" in host


async def test_missing_fields_wrong_type_and_topic_are_refused_before_any_fetch() -> None:
    verifier = SnsVerifier(topic_arns=["arn:aws:sns:us-east-1:123456789012:amazon-pay"])
    for envelope, reason in (
        ({k: v for k, v in ENVELOPE.items() if k != "Message"}, "malformed"),
        ({**ENVELOPE, "Type": "SubscriptionConfirmation"}, "unsupported_type"),
        ({**ENVELOPE, "TopicArn": "arn:aws:sns:us-east-1:1:other"}, "unexpected_topic"),
        ({**ENVELOPE, "SignatureVersion": "3"}, "malformed"),
    ):
        with pytest.raises(SnsError) as caught:
            await verifier.verify({**envelope, "Signature": "AAAA"})
        assert caught.value.reason == reason
