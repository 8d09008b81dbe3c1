using System.Reflection;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Tests;

/// <summary>
/// <see cref="RelayOptionsValidator.ValidateRuntimeEndpoint"/>: a cloud endpoint added while the relay runs follows the
/// configuration's rules, and may not conflict with the configured or other runtime endpoints.
/// </summary>
[TestFixture]
[Category("AdminApi")]
public sealed class RuntimeEndpointValidationTests
{
    private static CloudEndpointOptions Endpoint(string name, string protocol, string listen, params string[] hostnames) =>
        RelayOptionsValidatorTests.Named(name, protocol, listen, hostnames);

    private static List<string> Validate(CloudEndpointOptions candidate, params CloudEndpointOptions[] others)
    {
        var errors = new List<string>();
        RelayOptionsValidator.ValidateRuntimeEndpoint(candidate, others, errors);
        return errors;
    }

    private static readonly CloudEndpointOptions[] Others =
    [
        Endpoint("db", "tcp", "127.0.0.1:7000"),
        Endpoint("web", "http", "0.0.0.0:8080", "web.relay.test", "*.apps.relay.test"),
        Endpoint("secure", "tls", "0.0.0.0:8443", "db.relay.test"),
        Endpoint("local", "http", "127.0.0.1:0", "local.relay.test"),
    ];

    [Test]
    public void AValidEndpoint_ReportsNothing_AndItsPolicyIsCompiled()
    {
        var candidate = Endpoint("api", "http", "0.0.0.0:8080", "api.relay.test");
        var rule = new PolicyRuleOptions { Type = "restrict-ips" };
        rule.Allow.Add("10.0.0.0/8");
        candidate.Policy.OnConnect.Add(rule);

        var errors = Validate(candidate, Others);

        Assert.Multiple(() =>
        {
            Assert.That(errors, Is.Empty);
            Assert.That(candidate.CompiledPolicy, Is.Not.Null, "compiled as the configuration's validation does");
            Assert.That(candidate.PolicyFingerprint, Is.Not.Null);
        });
        candidate.CompiledPolicy!.Dispose();
    }

    [Test]
    public void ATenantWithoutTokenYet_IsAccepted()
    {
        var candidate = Endpoint("api", "tcp", "127.0.0.1:0");
        candidate.Tenant = "newcomer";
        Assert.That(Validate(candidate), Is.Empty, "tokens change while the relay runs");
    }

    [TestCase("db", "tcp", "127.0.0.1:0", "Name 'db' is used by another cloud endpoint")]
    [TestCase("DB", "tcp", "127.0.0.1:0", "Name 'DB' is used by another cloud endpoint")]
    [TestCase("db2", "tcp", "127.0.0.1:7000", "Listen '127.0.0.1:7000' is used by another cloud endpoint")]
    [TestCase("db2", "tls", "127.0.0.1:7000", "Listen '127.0.0.1:7000' is used by a tcp cloud endpoint")]
    [TestCase("api", "https", "0.0.0.0:8080", "Listen '0.0.0.0:8080' is already a http listener")]
    [TestCase("api", "tcp", "0.0.0.0:8443", "Listen '0.0.0.0:8443' is used by another cloud endpoint")]
    public void Conflicts_WithTheOthers_AreNamed(string name, string protocol, string listen, string expected)
    {
        var candidate = Endpoint(name, protocol, listen, protocol == "tcp" ? [] : ["x.relay.test"]);
        if (protocol == "https")
        {
            candidate.CertificatePath = "/etc/x.pfx";
        }

        Assert.That(Validate(candidate, Others), Has.Some.Contains(expected));
    }

    [TestCase("http", "0.0.0.0:8080", "WEB.relay.test", true)]
    [TestCase("http", "0.0.0.0:8080", "*.apps.relay.test", true)]
    [TestCase("http", "0.0.0.0:8080", "shop.apps.relay.test", false)]
    [TestCase("http", "0.0.0.0:9090", "web.relay.test", false)]
    [TestCase("http", "127.0.0.1:0", "local.relay.test", true)]
    [TestCase("tls", "127.0.0.1:0", "local.relay.test", false)]
    public void AHostName_IsUniquePerListener(string protocol, string listen, string hostname, bool taken)
    {
        var errors = Validate(Endpoint("api", protocol, listen, hostname), Others);
        Assert.That(errors.Any(e => e.Contains("is served by another cloud endpoint", StringComparison.Ordinal)), Is.EqualTo(taken), string.Join(" ", errors));
    }

    [Test]
    public void TheConfigurationsRulesForOneEndpoint_Apply()
    {
        var candidate = new CloudEndpointOptions { Name = "", Protocol = "udp", Listen = "127.0.0.1", Tenant = "", Endpoint = "-bad", MaxConnections = 0 };
        var https = Endpoint("nocert", "https", "127.0.0.1:0", "z.relay.test");

        var errors = Validate(candidate, Others);

        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.All.StartWith("CloudEndpoint:"));
            Assert.That(errors, Has.Some.Contains("Name is required"));
            Assert.That(errors, Has.Some.Contains("Protocol 'udp' is not supported"));
            Assert.That(errors, Has.Some.Contains("Listen '127.0.0.1' is not an ip:port address"));
            Assert.That(Validate(Endpoint("api", "http", "127.0.0.1:0", "under_score.relay.test")), Has.Some.Contains("'under_score.relay.test' is not a host name"));
            Assert.That(errors, Has.Some.Contains("Tenant is required"));
            Assert.That(errors, Has.Some.Contains("Endpoint '-bad' is not a valid internal endpoint name"));
            Assert.That(errors, Has.Some.Contains("MaxConnections must be at least 1"));
            Assert.That(Validate(https), Has.Some.Contains("CertificatePath is required for an https endpoint"));
        });
    }

    [Test]
    public void AnInvalidPolicy_AndOidcRules_AreRefused()
    {
        var candidate = Endpoint("api", "http", "127.0.0.1:0", "api.relay.test");
        candidate.Policy.OnConnect.Add(new PolicyRuleOptions { Type = "no-such-rule" });
        candidate.Policy.OnHttpRequest.Add(new PolicyRuleOptions { Type = "oidc", Authority = "https://login.example", ClientId = "relay", ClientSecret = "s3cret" });

        var errors = Validate(candidate, Others);

        Assert.Multiple(() =>
        {
            Assert.That(errors, Has.Some.Contains("CloudEndpoint:Policy:OnConnect[0]:Type 'no-such-rule'"));
            Assert.That(errors, Has.Some.Contains("OnHttpRequest[0]: oidc rules are set in the relay's configuration file"));
            Assert.That(candidate.CompiledPolicy, Is.Null, "an invalid policy compiles to nothing");
        });
    }

    [Test]
    public void ConflictsAmongTheOthers_AreNotTheCandidates()
    {
        var others = new[] { Endpoint("a", "tcp", "127.0.0.1:7000"), Endpoint("b", "tcp", "127.0.0.1:7000") };
        Assert.That(Validate(Endpoint("c", "tcp", "127.0.0.1:7001"), others), Is.Empty);
    }

    /// <summary>Every setting of a runtime endpoint, changed, is seen as a change (or the relay would keep running the old one).</summary>
    [Test]
    public void EverySettingOfAnEndpoint_IsComparedWhenApplied()
    {
        var settable = typeof(CloudEndpointOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).ToArray();
        foreach (var property in settable.Where(p => p.Name is not (nameof(CloudEndpointOptions.Name) or nameof(CloudEndpointOptions.CertificatePassword))))
        {
            var running = Endpoint("api", "https", "127.0.0.1:0", "api.relay.test");
            running.PolicyFingerprint = Policy.TrafficPolicy.Fingerprint(running.Policy);
            var candidate = Endpoint("api", "https", "127.0.0.1:0", "api.relay.test");
            property.SetValue(candidate, property.PropertyType switch
            {
                var t when t == typeof(string) => "127.0.0.2:1",
                var t when t == typeof(int) => 7,
                var t when t == typeof(bool) => true,
                var t when t == typeof(TimeSpan) => TimeSpan.FromSeconds(7),
                var t => throw new AssertionException($"a setting of type {t.Name}: teach this test and CloudEndpointHost.Changes about it"),
            });

            Assert.That(CloudEndpointHost.Changes(running, "", candidate, ""), Does.Contain(property.Name), property.Name);
        }

        var hostnames = Endpoint("api", "https", "127.0.0.1:0", "other.relay.test");
        var policy = Endpoint("api", "https", "127.0.0.1:0", "api.relay.test");
        policy.Policy.OnConnect.Add(new PolicyRuleOptions { Type = "deny" });
        var baseline = Endpoint("api", "https", "127.0.0.1:0", "API.relay.test.");
        baseline.PolicyFingerprint = Policy.TrafficPolicy.Fingerprint(baseline.Policy);
        Assert.Multiple(() =>
        {
            Assert.That(CloudEndpointHost.Changes(baseline, "", hostnames, ""), Is.EqualTo(new[] { "Hostnames" }));
            Assert.That(CloudEndpointHost.Changes(baseline, "", policy, ""), Is.EqualTo(new[] { "Policy" }));
            Assert.That(CloudEndpointHost.Changes(baseline, "1@1", baseline, "2@2"), Is.EqualTo(new[] { "certificate files" }));
            Assert.That(CloudEndpointHost.Changes(baseline, "", Endpoint("api", "HTTPS", "127.0.0.1:0", "api.relay.test"), ""), Is.Empty,
                "protocol and host names compare as the relay routes them");
        });
    }
}
