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
            Assert.That(options.Tls.DevelopmentCertificatePath, Is.EqualTo(Path.Combine(TestContext.CurrentContext.TestDirectory, "relay-dev-cert.pfx")),
                "a relative path in a file is relative to that file's folder");
            Assert.That(options.Tokens, Has.Count.EqualTo(1));
            Assert.That(options.Tokens[0].Allow, Is.EqualTo(new[] { "db-*", "web", "status", "redis" }));
            Assert.That(options.CloudEndpoints.Select(e => e.Endpoint), Is.EqualTo(new[] { "db-postgres", "web", "status", "redis" }));
            Assert.That(options.Limits.MaxSessionsPerToken, Is.EqualTo(4));
            Assert.That(options.Limits.MaxBindsPerSession, Is.EqualTo(256), "unset limits keep their defaults");
            Assert.That(RelayOptionsValidator.Validate(options), Is.Empty);
        });
    }

    [Test]
    [Category("Operator")]
    public void Load_RelativePaths_FollowTheSourceThatSetThem()
    {
        var folder = Directory.CreateTempSubdirectory("relay-config-").FullName;
        try
        {
            var file = Path.Combine(folder, "relay.json");
            File.WriteAllText(file, """{ "Relay": { "Tls": { "CertificatePath": "certs/relay.pfx", "KeyPath": "/abs/key.pem", "DevelopmentCertificatePath": "dev.pfx" } } }""");
            var configuration = new ConfigurationBuilder()
                .AddJsonFile(file)
                .AddInMemoryCollection(new Dictionary<string, string?> { ["Relay:Tls:DevelopmentCertificatePath"] = "from-env.pfx" })
                .Build();

            var tls = RelayConfiguration.Load(configuration).Tls;

            Assert.Multiple(() =>
            {
                Assert.That(tls.CertificatePath, Is.EqualTo(Path.Combine(folder, "certs", "relay.pfx")), "from a file: that file's folder");
                Assert.That(tls.KeyPath, Is.EqualTo("/abs/key.pem"), "absolute paths are kept");
                Assert.That(tls.DevelopmentCertificatePath, Is.EqualTo(Path.Combine(Directory.GetCurrentDirectory(), "from-env.pfx")), "a later non-file source wins, against the working directory");
            });
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    [Category("Operator")]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void AddConfigFile_AFileTheRelayMayNotRead_IsOneLineNamingIt()
    {
        Assume.That(OperatingSystem.IsWindows() || Environment.UserName == "root", Is.False, "Unix permissions bind a user other than root");
        var folder = Directory.CreateTempSubdirectory("relay-config-").FullName;
        try
        {
            var file = Path.Combine(folder, "relay.json");
            File.WriteAllText(file, "{}");
            File.SetUnixFileMode(file, UnixFileMode.None);

            var ex = Assert.Throws<RelayConfigurationException>(() => RelayConfiguration.AddConfigFile(new ConfigurationBuilder(), file));

            Assert.That(ex!.Errors.Single(), Does.Contain($"'{file}' cannot be read").And.Contain("permissions"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    [Category("Operator")]
    public void Load_AValueThatDoesNotConvert_IsAConfigurationErrorNamingTheKey()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["Relay:Limits:HelloTimeout"] = "ten seconds" })
            .Build();

        var ex = Assert.Throws<RelayConfigurationException>(() => RelayConfiguration.Load(configuration));

        Assert.That(ex!.Errors, Has.Count.EqualTo(1));
        Assert.That(ex.Errors[0], Does.Contain("'Relay:Limits:HelloTimeout'").And.Contain("hh:mm:ss"));
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
