using Grpc.Core;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink.Sdk.Tests;

[TestFixture]
internal sealed class ErrorMappingTests
{
    private static readonly Uri Relay = new("https://relay.example");

    [TestCase(StatusCode.Unauthenticated, typeof(TunnelAuthenticationException), false)]
    [TestCase(StatusCode.PermissionDenied, typeof(TunnelPermissionException), false)]
    [TestCase(StatusCode.FailedPrecondition, typeof(TunnelPermissionException), false)]
    [TestCase(StatusCode.ResourceExhausted, typeof(TunnelPermissionException), false)]
    [TestCase(StatusCode.Unavailable, typeof(TunnelConnectionException), true)]
    [TestCase(StatusCode.Internal, typeof(TunnelConnectionException), true)]
    public void FromRpc_MapsStatusToTypedException(StatusCode code, Type expected, bool transient)
    {
        var mapped = ErrorMapping.FromRpc(new RpcException(new Status(code, "detail from relay")), Relay, null);

        Assert.Multiple(() =>
        {
            Assert.That(mapped, Is.TypeOf(expected));
            Assert.That(mapped.IsTransient, Is.EqualTo(transient));
            Assert.That(mapped.Message, Does.Contain("detail from relay"));
            Assert.That(mapped.InnerException, Is.TypeOf<RpcException>());
        });
    }

    [TestCase(StatusCode.Unauthenticated, TunnelError.AuthenticationFailed)]
    [TestCase(StatusCode.FailedPrecondition, TunnelError.VersionNotSupported)]
    [TestCase(StatusCode.PermissionDenied, TunnelError.PermissionDenied)]
    [TestCase(StatusCode.ResourceExhausted, TunnelError.PermissionDenied)]
    [TestCase(StatusCode.Unavailable, TunnelError.ConnectionFailed)]
    [Category("Operator")]
    public void FromRpc_SaysWhatKindOfFailureItIs(StatusCode code, TunnelError expected)
    {
        var mapped = ErrorMapping.FromRpc(new RpcException(new Status(code, "detail from relay")), Relay, null);

        Assert.That(mapped.TunnelError, Is.EqualTo(expected));
    }

    [Test]
    [Category("Operator")]
    public void EveryExceptionType_HasAKind_AndAnExplicitKindWins()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new TunnelException("x").TunnelError, Is.EqualTo(TunnelError.Unknown));
            Assert.That(new TunnelAuthenticationException("x").TunnelError, Is.EqualTo(TunnelError.AuthenticationFailed));
            Assert.That(new TunnelPermissionException("x").TunnelError, Is.EqualTo(TunnelError.PermissionDenied));
            Assert.That(new TunnelConnectionException("x").TunnelError, Is.EqualTo(TunnelError.ConnectionFailed));
            Assert.That(new TunnelProtocolException("x").TunnelError, Is.EqualTo(TunnelError.ProtocolError));
            Assert.That(new TunnelConnectionException("x", null, false, TunnelError.CertificateRejected).TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
        });
    }

    [Test]
    public void FromRpc_CertificateRejected_IsNotTransientAndSaysWhy()
    {
        var mapped = ErrorMapping.FromRpc(new RpcException(new Status(StatusCode.Unavailable, "ssl error")), Relay, "the relay's certificate does not match PinnedCertificateSha256");

        Assert.Multiple(() =>
        {
            Assert.That(mapped, Is.TypeOf<TunnelConnectionException>());
            Assert.That(mapped.IsTransient, Is.False);
            Assert.That(mapped.Message, Does.Contain("PinnedCertificateSha256"));
            Assert.That(mapped.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
        });
    }

    [TestCase(BindStatus.Denied, BindErrorCode.Denied)]
    [TestCase(BindStatus.NameTaken, BindErrorCode.NameTaken)]
    [TestCase(BindStatus.Invalid, BindErrorCode.Invalid)]
    [TestCase(BindStatus.LimitExceeded, BindErrorCode.LimitExceeded)]
    [TestCase(BindStatus.Unspecified, BindErrorCode.Unknown)]
    [TestCase((BindStatus)99, BindErrorCode.Unknown)]
    public void FromBindStatus_MapsEveryWireValue(BindStatus status, BindErrorCode expected)
    {
        Assert.That(ErrorMapping.FromBindStatus(status), Is.EqualTo(expected));
    }

    [Test]
    public void ToWireKind_EveryPublicKindHasAWireKind()
    {
        foreach (var kind in Enum.GetValues<TunnelEndpointKind>())
        {
            Assert.That(ErrorMapping.ToWireKind(kind), Is.EqualTo(EndpointKind.Tcp));
        }
    }
}
