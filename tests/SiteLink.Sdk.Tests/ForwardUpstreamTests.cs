namespace SiteLink.Sdk.Tests;

[TestFixture]
[Category("Surface")]
public sealed class ForwardUpstreamTests
{
    [TestCase("tcp://10.0.0.12:5432", "10.0.0.12", 5432)]
    [TestCase("TCP://db.internal:1", "db.internal", 1)]
    [TestCase("tcp://[::1]:8080", "::1", 8080)]
    [TestCase("10.0.0.12:5432", "10.0.0.12", 5432)]
    [TestCase("[::1]:8080", "::1", 8080)]
    [TestCase("localhost:65535", "localhost", 65535)]
    public void TryParseUpstream_ReadsTcpUrisAndHostPort(string text, string host, int port)
    {
        Assert.That(ForwardEndpointOptions.TryParseUpstream(text, out var upstream), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(upstream!.Scheme, Is.EqualTo("tcp"));
            Assert.That(upstream.DnsSafeHost, Is.EqualTo(host));
            Assert.That(upstream.Port, Is.EqualTo(port));
        });
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase("db.internal")]
    [TestCase("db.internal:0")]
    [TestCase("db.internal:65536")]
    [TestCase("::1:8080")]
    [TestCase("http://db.internal:80")]
    [TestCase("tcp://db.internal")]
    [TestCase("tcp://db.internal:5432/path")]
    [TestCase("tcp://user:pw@db.internal:5432")]
    [TestCase("tcp://db.internal:5432?x=1")]
    [TestCase("db internal:5432")]
    public void TryParseUpstream_RefusesEverythingElse(string? text)
    {
        Assert.That(ForwardEndpointOptions.TryParseUpstream(text, out var upstream), Is.False);
        Assert.That(upstream, Is.Null);
    }

    [Test]
    public void AConfiguredEndpoint_CarriesEverySettingOfEndpointOptions()
    {
        // A setting added to EndpointOptions must be declarable in configuration too (SiteLink:Endpoints).
        static string[] Shape(Type type) => type.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Select(p => $"{p.Name}:{p.PropertyType.Name}:{p.CanWrite}").Order().ToArray();

        // Certificates cannot come from configuration: those settings are given in code, with AddForward(…, configure).
        var codeOnly = new[] { nameof(EndpointOptions.TlsServer), nameof(EndpointOptions.UpstreamTls) };
        Assert.That(Shape(typeof(ForwardEndpointOptions)), Is.SupersetOf(Shape(typeof(EndpointOptions)).Where(s => !codeOnly.Contains(s.Split(':')[0]))));
    }
}
