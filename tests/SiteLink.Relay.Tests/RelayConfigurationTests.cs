using Microsoft.Extensions.Configuration;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Tests;

[TestFixture]
public sealed class RelayConfigurationTests
{
    [Test]
    public void Load_TheSampleConfigurationFile_BindsEverySectionAndValidates()
    {
        var path = Path.Combine(TestContext.CurrentContext.TestDirectory, "relay.json");
        var configuration = new ConfigurationBuilder().AddJsonFile(path).Build();

        var options = RelayConfiguration.Load(configuration);

        Assert.Multiple(() =>
        {
            Assert.That(options.RelayId, Is.EqualTo("relay-dev-1"));
            Assert.That(options.AgentListen, Is.EqualTo("127.0.0.1:8443"));
            Assert.That(options.Tls.DevelopmentCertificatePath, Is.EqualTo("relay-dev-cert.pfx"));
            Assert.That(options.Tokens, Has.Count.EqualTo(1));
            Assert.That(options.Tokens[0].Allow, Is.EqualTo(new[] { "db-*", "web", "status" }));
            Assert.That(options.CloudEndpoints.Select(e => e.Endpoint), Is.EqualTo(new[] { "db-postgres", "web", "status" }));
            Assert.That(options.Limits.MaxSessionsPerToken, Is.EqualTo(4));
            Assert.That(options.Limits.MaxBindsPerSession, Is.EqualTo(256), "unset limits keep their defaults");
            Assert.That(RelayOptionsValidator.Validate(options), Is.Empty);
        });
    }

    [Test]
    public void Load_EnvironmentStyleKeys_OverrideTheFile()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Relay:AgentListen"] = "0.0.0.0:443",
                ["Relay:Tokens:0:Name"] = "t",
                ["Relay:Tokens:0:Sha256"] = new string('a', 64),
                ["Relay:Tokens:0:Tenant"] = "x",
                ["Relay:Tokens:0:Allow:0"] = "*",
                ["Relay:Limits:MaxFrameSize"] = "32768",
                ["Relay:Tls:AllowDevelopmentCertificateOnNetwork"] = "true",
            })
            .Build();

        var options = RelayConfiguration.Load(configuration);

        Assert.Multiple(() =>
        {
            Assert.That(options.AgentListen, Is.EqualTo("0.0.0.0:443"));
            Assert.That(options.Tokens.Single().Sha256, Is.EqualTo(new string('a', 64)));
            Assert.That(options.Limits.MaxFrameSize, Is.EqualTo(32768));
            Assert.That(options.Tls.AllowDevelopmentCertificateOnNetwork, Is.True);
            Assert.That(RelayOptionsValidator.Validate(options), Is.Empty);
        });
    }
}
