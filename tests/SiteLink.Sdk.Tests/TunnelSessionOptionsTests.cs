namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class TunnelSessionOptionsTests
{
    private static TunnelSessionOptions Valid() => new()
    {
        RelayUrl = new Uri("https://relay.example:443"),
        AuthToken = "secret-token-value",
    };

    [Test]
    public void Validate_ValidOptions_ReportsNothing()
    {
        Assert.That(Valid().Validate(), Is.Empty);
    }

    [Test]
    public void Validate_EverythingWrong_ListsEveryProblemAtOnce()
    {
        var options = new TunnelSessionOptions
        {
            RelayUrl = null,
            AuthToken = " ",
            PinnedCertificateSha256 = "abc",
            ConnectTimeout = TimeSpan.Zero,
            RequestTimeout = TimeSpan.FromSeconds(-1),
            UpstreamConnectTimeout = TimeSpan.Zero,
            StreamCloseTimeout = TimeSpan.Zero,
            ListenerBacklog = 0,
        };

        var errors = options.Validate();

        Assert.That(errors, Has.Count.EqualTo(8));
        Assert.That(errors, Has.Some.Contains("RelayUrl is required"));
        Assert.That(errors, Has.Some.Contains("AuthToken is required"));
        Assert.That(errors, Has.Some.Contains("PinnedCertificateSha256"));
        Assert.That(errors, Has.Some.Contains("ListenerBacklog"));
    }

    [TestCase("http://relay.example", false, true)]
    [TestCase("http://127.0.0.1:8080", true, false)]
    [TestCase("http://localhost:8080", true, false)]
    [TestCase("http://[::1]:8080", true, false)]
    [TestCase("http://relay.example", true, true)]
    [TestCase("http://10.0.0.5:8443", true, true)]
    [TestCase("ftp://relay.example", true, true)]
    [TestCase("https://relay.example", false, false)]
    public void Validate_Scheme_HttpNeedsExplicitOptIn(string url, bool allowInsecure, bool expectError)
    {
        var options = Valid();
        options.RelayUrl = new Uri(url);
        options.AllowInsecureTransport = allowInsecure;

        Assert.That(options.Validate().Any(e => e.Contains("RelayUrl", StringComparison.Ordinal)), Is.EqualTo(expectError));
    }

    [Test]
    public void Validate_PlainHttpToARemoteRelay_SaysWhy()
    {
        var options = Valid();
        options.RelayUrl = new Uri("http://relay.example:8443");
        options.AllowInsecureTransport = true;

        Assert.That(options.Validate(), Has.One.Contains("not loopback").And.Contains("clear text"));
    }

    [Test]
    public void Validate_ConnectionLimits_MustBePositive()
    {
        var options = Valid();
        options.MaxConcurrentConnections = 0;
        options.MaxConcurrentConnectionsPerEndpoint = -1;

        var errors = options.Validate();

        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.Some.Contains("MaxConcurrentConnections must be"));
            Assert.That(errors, Has.Some.Contains("MaxConcurrentConnectionsPerEndpoint must be"));
            Assert.That(new TunnelSessionOptions().MaxConcurrentConnections, Is.EqualTo(2048));
            Assert.That(new TunnelSessionOptions().MaxConcurrentConnectionsPerEndpoint, Is.EqualTo(1024));
        });
    }

    [Test]
    public void Validate_NeverQuotesTheToken()
    {
        var options = Valid();
        options.AuthToken = "super-secret-value";
        options.RelayUrl = new Uri("http://relay.example");

        Assert.That(string.Join("\n", options.Validate()), Does.Not.Contain("super-secret-value"));
    }

    [Test]
    public void ConnectAsync_InvalidOptions_ThrowsArgumentExceptionListingAll()
    {
        var options = new TunnelSessionOptions();

        var ex = Assert.ThrowsAsync<ArgumentException>(() => TunnelSession.ConnectAsync(options));

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain("RelayUrl is required"));
            Assert.That(ex.Message, Does.Contain("AuthToken is required"));
        });
    }

    [Test]
    public void Validate_InfiniteTimeouts_AreAllowed()
    {
        var options = Valid();
        options.StreamCloseTimeout = Timeout.InfiniteTimeSpan;

        Assert.That(options.Validate(), Is.Empty);
    }
}
