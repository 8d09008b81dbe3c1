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
    [Category("VersionPolicy")]
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
            Assert.That(new TunnelVersionException("1.0.0", "2.1.0").TunnelError, Is.EqualTo(TunnelError.VersionNotSupported));
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

    private static RpcException VersionRefusal(string? minimum, string refusal = "agent-version", StatusCode code = StatusCode.FailedPrecondition)
    {
        var trailers = new Metadata { { "sitelink-refusal", refusal }, { "sitelink-agent-version", "1.0.0" } };
        if (minimum is not null)
        {
            trailers.Add("sitelink-minimum-version", minimum);
        }

        return new RpcException(new Status(code, "this relay requires SiteLink SDK 2.1.0 or later; the agent runs 1.0.0"), trailers);
    }

    [Test]
    [Category("VersionPolicy")]
    public void FromRpc_AgentVersionRefusal_IsAPermanentVersionExceptionNamingBothVersions()
    {
        var mapped = ErrorMapping.FromRpc(VersionRefusal("2.1.0"), Relay, null);

        Assert.Multiple(() =>
        {
            Assert.That(mapped, Is.TypeOf<TunnelVersionException>());
            var version = (TunnelVersionException)mapped;
            Assert.That(version.MinimumVersion, Is.EqualTo("2.1.0"));
            Assert.That(version.AgentVersion, Is.EqualTo(ProtocolConstants.SdkVersion), "this SDK's own version");
            Assert.That(version.Message, Is.EqualTo($"The relay requires SiteLink SDK 2.1.0 or later; this agent runs {ProtocolConstants.SdkVersion}. Update the agent."));
            Assert.That(version.IsTransient, Is.False);
            Assert.That(version.TunnelError, Is.EqualTo(TunnelError.VersionNotSupported));
            Assert.That(version.InnerException, Is.TypeOf<RpcException>());
        });
    }

    [Test]
    [Category("VersionPolicy")]
    public void FromRpc_AHostileMinimumFromTheRelay_IsCappedAndCleaned()
    {
        var mapped = (TunnelVersionException)ErrorMapping.FromRpc(VersionRefusal("9.9.9\u001b[2J" + new string('x', 5000)), Relay, null);

        Assert.Multiple(() =>
        {
            Assert.That(mapped.MinimumVersion.Length, Is.LessThanOrEqualTo(65));
            Assert.That(mapped.Message.Contains('\u001b', StringComparison.Ordinal), Is.False, "no terminal escape from the relay");
            Assert.That(mapped.MinimumVersion, Does.StartWith("9.9.9?[2Jxxx"));
        });
    }

    [Test]
    [Category("VersionPolicy")]
    public void FromRpc_AgentVersionRefusalWithoutAMinimum_StillSaysToUpdate()
    {
        var mapped = (TunnelVersionException)ErrorMapping.FromRpc(VersionRefusal(null), Relay, null);

        Assert.Multiple(() =>
        {
            Assert.That(mapped.MinimumVersion, Is.Empty);
            Assert.That(mapped.Message, Does.Contain("requires a newer SiteLink SDK"));
            Assert.That(mapped.Message, Does.EndWith("Update the agent."));
        });
    }

    [TestCase("protocol-version", StatusCode.FailedPrecondition)]
    [TestCase("agent-version", StatusCode.PermissionDenied)]
    [TestCase("agent-version", StatusCode.Unavailable)]
    [Category("VersionPolicy")]
    public void FromRpc_OnlyFailedPreconditionWithTheAgentVersionTrailer_IsAVersionRefusal(string refusal, StatusCode code)
    {
        var mapped = ErrorMapping.FromRpc(VersionRefusal("2.1.0", refusal, code), Relay, null);

        Assert.That(mapped, Is.Not.TypeOf<TunnelVersionException>());
    }

    [Test]
    [Category("VersionPolicy")]
    public void FromRpc_AProtocolVersionRefusal_StaysAPermissionErrorOfKindVersionNotSupported()
    {
        var mapped = ErrorMapping.FromRpc(new RpcException(new Status(StatusCode.FailedPrecondition, "protocol version 1 is not supported; this relay speaks version 2")), Relay, null);

        Assert.Multiple(() =>
        {
            Assert.That(mapped, Is.TypeOf<TunnelPermissionException>());
            Assert.That(mapped.TunnelError, Is.EqualTo(TunnelError.VersionNotSupported));
            Assert.That(mapped.Message, Does.Contain("this relay speaks version 2"));
        });
    }

    [Test]
    [Category("VersionPolicy")]
    public void VersionException_WithNullArguments_HasEmptyVersionsRatherThanThrowing()
    {
        var ex = new TunnelVersionException(null!, null!);

        Assert.Multiple(() =>
        {
            Assert.That(ex.AgentVersion, Is.Empty);
            Assert.That(ex.MinimumVersion, Is.Empty);
            Assert.That(ex.IsTransient, Is.False);
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
