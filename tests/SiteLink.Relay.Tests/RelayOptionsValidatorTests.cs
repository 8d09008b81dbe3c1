using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Tests;

[TestFixture]
public sealed class RelayOptionsValidatorTests
{
    /// <summary>Options that pass validation: one token (tenant acme, any name), one tcp cloud endpoint.</summary>
    internal static RelayOptions Valid()
    {
        var options = new RelayOptions { AgentListen = "127.0.0.1:0" };
        var token = new AuthTokenOptions { Name = "acme", Token = "0123456789abcdef0123", Tenant = "acme" };
        token.Allow.Add("*");
        options.Tokens.Add(token);
        options.CloudEndpoints.Add(new CloudEndpointOptions { Name = "db", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "db" });
        return options;
    }

    [Test]
    public void Validate_ValidOptions_ReportsNothing()
    {
        Assert.That(RelayOptionsValidator.Validate(Valid()), Is.Empty);
    }

    [Test]
    public void Validate_ManyProblems_ListsEveryOneAtOnce()
    {
        var options = Valid();
        options.AgentListen = "not-an-address";
        options.Tls.CertificatePath = "/nonexistent/cert.pfx";
        var noSecret = new AuthTokenOptions { Name = "acme", Tenant = "" };
        options.Tokens.Add(noSecret);
        var badPattern = new AuthTokenOptions { Name = "bad", Token = "short", Tenant = "x" };
        badPattern.Allow.Add("db/*");
        options.Tokens.Add(badPattern);
        options.CloudEndpoints.Add(new CloudEndpointOptions { Name = "db", Listen = "127.0.0.1", Tenant = "nobody", Endpoint = "-bad", Protocol = "udp" });
        options.Limits.MaxFrameSize = 10;
        options.Limits.MaxSessionsPerToken = 0;

        var errors = RelayOptionsValidator.Validate(options);

        var expected = new[]
        {
            "AgentListen 'not-an-address'",
            "CertificatePath '/nonexistent/cert.pfx' does not exist",
            "Name 'acme' is used by another token",
            "needs exactly one of Token or Sha256",
            "Tenant of token 'acme' is required",
            "Allow of token 'acme' is empty",
            "Token of token 'bad' is too short",
            "Allow pattern 'db/*'",
            "Name 'db' is used by another cloud endpoint",
            "Protocol 'udp' is not supported",
            "Listen '127.0.0.1' is not an ip:port",
            "Tenant 'nobody' has no token",
            "Endpoint '-bad' is not a valid",
            "MaxFrameSize",
            "MaxSessionsPerToken",
        };
        foreach (var fragment in expected)
        {
            Assert.That(errors, Has.Some.Contains(fragment), fragment);
        }

        Assert.That(errors, Has.Count.EqualTo(expected.Length));
    }

    [Test]
    public void ThrowIfInvalid_MessageListsEveryProblem_AndNeverTheSecret()
    {
        var options = Valid();
        options.Tokens[0].Tenant = "";
        options.Tokens.Add(new AuthTokenOptions { Name = "dup", Token = options.Tokens[0].Token, Tenant = "t" });
        options.Tokens[1].Allow.Add("*");

        var ex = Assert.Throws<RelayConfigurationException>(() => RelayOptionsValidator.ThrowIfInvalid(options));

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Errors, Has.Count.EqualTo(3));
            Assert.That(ex.Message, Does.Contain("Tenant of token 'acme' is required"));
            Assert.That(ex.Message, Does.Contain("Tenant 'acme' has no token"), "the cloud endpoint lost its only token's tenant");
            Assert.That(ex.Message, Does.Contain("same secret as another token"));
            Assert.That(ex.Message, Does.Not.Contain("0123456789abcdef0123"));
        });
    }

    [Test]
    public void Validate_NoTokens_IsAnError()
    {
        var options = new RelayOptions { AgentListen = "127.0.0.1:0" };

        Assert.That(RelayOptionsValidator.Validate(options), Has.Some.Contains("Tokens is empty"));
    }

    [TestCase("0.0.0.0:443", true)]
    [TestCase("127.0.0.1:0", true)]
    [TestCase("[::1]:8443", true)]
    [TestCase("[::]:443", true)]
    [TestCase("127.0.0.1", false)]
    [TestCase("::1", false)]
    [TestCase("localhost:443", false)]
    [TestCase("127.0.0.1:99999", false)]
    public void TryParseEndPoint_RequiresAddressAndPort(string text, bool expected)
    {
        Assert.That(RelayOptionsValidator.TryParseEndPoint(text, out _), Is.EqualTo(expected));
    }

    internal static CloudEndpointOptions Named(string name, string protocol, string listen, params string[] hostnames)
    {
        var endpoint = new CloudEndpointOptions { Name = name, Protocol = protocol, Listen = listen, Tenant = "acme", Endpoint = "web" };
        foreach (var hostname in hostnames)
        {
            endpoint.Hostnames.Add(hostname);
        }

        return endpoint;
    }

    [Test]
    [Category("HttpEndpoints")]
    public void SharedListeners_PortZeroPerProtocol_AndEveryMistakeNamed()
    {
        var fine = Valid();
        fine.CloudEndpoints.Add(Named("a", "http", "127.0.0.1:0", "a.relay.test"));
        fine.CloudEndpoints.Add(Named("b", "http", "127.0.0.1:0", "*.b.relay.test"));
        fine.CloudEndpoints.Add(Named("c", "tls", "127.0.0.1:0", "c.relay.test"));
        var broken = Valid();
        broken.CloudEndpoints.Add(Named("mixed-http", "http", "127.0.0.1:8081", "x.relay.test"));
        broken.CloudEndpoints.Add(Named("mixed-tls", "tls", "127.0.0.1:8081", "y.relay.test"));
        broken.CloudEndpoints.Add(Named("twice", "http", "127.0.0.1:8081", "x.relay.test"));
        broken.CloudEndpoints.Add(Named("no-names", "http", "127.0.0.1:8082"));
        broken.CloudEndpoints.Add(Named("bad-name", "http", "127.0.0.1:8082", "under_score.relay.test", "*.com"));
        broken.CloudEndpoints.Add(Named("no-cert", "https", "127.0.0.1:8443", "z.relay.test"));
        broken.CloudEndpoints.Add(Named("tcp-names", "tcp", "127.0.0.1:8083", "t.relay.test"));
        broken.CloudEndpoints.Add(Named("udp", "udp", "127.0.0.1:8084"));

        var errors = RelayOptionsValidator.Validate(broken);

        Assert.Multiple(() =>
        {
            Assert.That(RelayOptionsValidator.Validate(fine), Is.Empty);
            Assert.That(errors, Has.Some.Contains("'127.0.0.1:8081' is already a http listener"));
            Assert.That(errors, Has.Some.Contains("Hostnames 'x.relay.test' is served by another cloud endpoint"));
            Assert.That(errors, Has.Some.Contains("Hostnames is required for a http endpoint"));
            Assert.That(errors, Has.Some.Contains("'under_score.relay.test' is not a host name"));
            Assert.That(errors, Has.Some.Contains("'*.com' is not a host name"));
            Assert.That(errors, Has.Some.Contains("CertificatePath is required for an https endpoint"));
            Assert.That(errors, Has.Some.Contains("Hostnames applies to http, https and tls endpoints"));
            Assert.That(errors, Has.Some.Contains("Protocol 'udp' is not supported"));
        });
    }
}
