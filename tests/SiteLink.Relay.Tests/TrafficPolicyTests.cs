using System.Net;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Policy;

namespace SiteLink.Relay.Tests;

[TestFixture]
[Category("TrafficPolicy")]
internal sealed class TrafficPolicyTests
{
    private static TrafficPolicy Compile(params PolicyRuleOptions[] onConnect)
    {
        var endpoint = new CloudEndpointOptions { Name = "db", Protocol = "tcp" };
        endpoint.Policy.OnConnect.AddRange(onConnect);
        var errors = new List<string>();
        var policy = TrafficPolicy.Compile(endpoint, "test", errors);
        Assert.That(errors, Is.Empty);
        return policy!;
    }

    [Test]
    public void RestrictIps_Ipv6Ranges_AndIpv4MappedClients()
    {
        var rule = new PolicyRuleOptions { Type = "restrict-ips" };
        rule.Allow.Add("2001:db8::/32");
        rule.Allow.Add("192.0.2.0/24");
        rule.Deny.Add("2001:db8:bad::/48");
        using var policy = Compile(rule);

        Assert.Multiple(() =>
        {
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8:1::5")), Is.Null);
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8:bad::5"))?.Reason, Is.EqualTo("ip_denied"), "denied inside an allowed range");
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db9::1")), Is.Not.Null, "outside every allowed range");
            Assert.That(policy.OnConnect(IPAddress.Parse("::ffff:192.0.2.7")), Is.Null, "an IPv4-mapped client counts as IPv4");
            Assert.That(policy.OnConnect(IPAddress.Parse("198.51.100.1")), Is.Not.Null);
        });
    }

    [Test]
    public void RateLimit_IsPerClient_AndIpv6ClientsSharePerSlash64()
    {
        using var policy = Compile(new PolicyRuleOptions { Type = "rate-limit", Capacity = 2, PerSecond = 0.001 });

        Assert.Multiple(() =>
        {
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8::1")), Is.Null);
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8::2")), Is.Null, "same /64, second token");
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8::3"))?.Reason, Is.EqualTo("rate_limited"), "same /64: one bucket");
            Assert.That(policy.OnConnect(IPAddress.Parse("2001:db8:0:1::1")), Is.Null, "another /64, another bucket");
            Assert.That(policy.OnConnect(IPAddress.Parse("192.0.2.1")), Is.Null);
        });
    }

    [Test]
    public void PasswordHash_RoundTrips_AndRefusesWhatIsNotOne()
    {
        var hash = PasswordHash.Create("s3cret", iterations: 10_000);
        Assert.That(PasswordHash.TryParse(hash.ToString(), out var parsed, out _), Is.True);

        Assert.Multiple(() =>
        {
            Assert.That(parsed.Verify("s3cret"), Is.True);
            Assert.That(parsed.Verify("s3cret "), Is.False);
            Assert.That(hash.ToString(), Does.StartWith("pbkdf2-sha256$10000$").And.Not.Contain("s3cret"));
            Assert.That(PasswordHash.TryParse("s3cret", out _, out _), Is.False, "a password where a hash belongs");
            Assert.That(PasswordHash.TryParse("pbkdf2-sha256$100$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", out _, out var few), Is.False);
            Assert.That(few, Does.Contain("10,000"));
            Assert.That(PasswordHash.TryParse("pbkdf2-sha256$10000$%%%$AAAA", out _, out _), Is.False);
        });
    }

    [Test]
    public void Compile_RefusesWhatWouldNeverMatchOrBreakAHeader()
    {
        var endpoint = new CloudEndpointOptions { Name = "web", Protocol = "http" };
        var mapped = new PolicyRuleOptions { Type = "restrict-ips" };
        mapped.Deny.Add("::ffff:203.0.113.0/120");
        endpoint.Policy.OnConnect.Add(mapped);
        var header = new PolicyRuleOptions { Type = "add-headers" };
        header.Headers["X-Team"] = "caf\u00e9";
        endpoint.Policy.OnHttpRequest.Add(header);
        var jwt = new PolicyRuleOptions { Type = "jwt", Issuer = "https://idp", JwksUrl = "http://idp.example/jwks", Realm = "a \"quoted\" realm" };
        jwt.Audiences.Add("api");
        endpoint.Policy.OnHttpRequest.Add(jwt);
        var errors = new List<string>();

        Assert.That(TrafficPolicy.Compile(endpoint, "e", errors), Is.Null);
        Assert.That(errors, Has.Some.Contain("IPv4-mapped IPv6 range: write the IPv4 range")
            .And.Some.Contain("visible ASCII characters")
            .And.Some.Contain("must be an absolute https URL (http only to loopback)")
            .And.Some.Contain("Realm must be at most 64 visible ASCII characters, without quotes"));
    }
}
