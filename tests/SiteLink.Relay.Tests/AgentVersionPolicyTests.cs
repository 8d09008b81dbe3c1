using Grpc.Core;
using Microsoft.Extensions.Configuration;
using SiteLink.Internal;
using SiteLink.Relay.Agents;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Tests;

/// <summary>Relay:MinimumAgentVersion: the SemVer 2.0 comparer, the setting's validation, and what an agent is told.</summary>
[TestFixture]
[Category("VersionPolicy")]
public sealed class AgentVersionPolicyTests
{
    private static SemanticVersion V(string text) => SemanticVersion.Parse(text);

    // SemVer 2.0's own precedence example (section 11), each lower than the next, with numeric parts past one digit.
    private static readonly string[] Ascending =
    [
        "0.9.0", "0.10.0", "1.0.0-0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0", "2.1.0-rc.1", "2.1.0", "10.0.0",
        "99999999999999999999999999.0.0",
    ];

    [Test]
    public void Compare_FollowsSemVerPrecedence_InBothDirections()
    {
        for (var i = 0; i < Ascending.Length; i++)
        {
            for (var j = 0; j < Ascending.Length; j++)
            {
                Assert.That(Math.Sign(V(Ascending[i]).CompareTo(V(Ascending[j]))), Is.EqualTo(Math.Sign(i.CompareTo(j))), $"{Ascending[i]} vs {Ascending[j]}");
            }
        }
    }

    [TestCase("1.0.0-rc.1", "1.0.0", -1)]
    [TestCase("1.0.0-alpha.2", "1.0.0-alpha.10", -1)]
    [TestCase("1.0.0-alpha.10", "1.0.0-alpha.9a", -1)]
    [TestCase("1.0.0-2", "1.0.0-a", -1)]
    [TestCase("1.0.0-Z", "1.0.0-a", -1)]
    [TestCase("1.0.0-rc.1.1", "1.0.0-rc.1", 1)]
    [TestCase("1.0.0-x-y", "1.0.0-x", 1)]
    [TestCase("1.0.0+build.5", "1.0.0", 0)]
    [TestCase("1.0.0+build.5", "1.0.0+other", 0)]
    [TestCase("1.0.0-rc.1+sha.abc", "1.0.0-rc.1", 0)]
    [TestCase("2.1.0+a1b2c3", "2.1.0-rc.1", 1)]
    [TestCase("18446744073709551616.0.0", "18446744073709551615.0.0", 1)]
    [TestCase("1.0.0-18446744073709551616", "1.0.0-18446744073709551615", 1)]
    public void Compare_PrereleaseBuildAndLargeNumbers(string left, string right, int expected)
    {
        Assert.Multiple(() =>
        {
            Assert.That(Math.Sign(V(left).CompareTo(V(right))), Is.EqualTo(expected));
            Assert.That(Math.Sign(V(right).CompareTo(V(left))), Is.EqualTo(-expected));
        });
    }

    [TestCase("1.2.3", "1.2.3")]
    [TestCase("1.2.3-rc.1", "1.2.3-rc.1")]
    [TestCase("1.2.3+build", "1.2.3")]
    [TestCase("1.2.3-rc.1+build.7-x", "1.2.3-rc.1")]
    [TestCase("1.2.3-0.a-b.007x", "1.2.3-0.a-b.007x")]
    [TestCase("0.0.0", "0.0.0")]
    public void Parse_AcceptsSemVer_AndDropsBuildMetadata(string text, string expected)
    {
        Assert.That(SemanticVersion.TryParse(text, out var version), Is.True);
        Assert.That(version!.ToString(), Is.EqualTo(expected));
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase("1")]
    [TestCase("1.2")]
    [TestCase("1.2.3.4")]
    [TestCase("v1.2.3")]
    [TestCase(" 1.2.3")]
    [TestCase("1.2.3 ")]
    [TestCase("01.2.3")]
    [TestCase("1.02.3")]
    [TestCase("1.2.03")]
    [TestCase("1.2.3-")]
    [TestCase("1.2.3-01")]
    [TestCase("1.2.3-rc..1")]
    [TestCase("1.2.3-rc.1.")]
    [TestCase("1.2.3+")]
    [TestCase("1.2.3+a..b")]
    [TestCase("1.2.3-rc_1")]
    [TestCase("1.2.3+build+more")]
    [TestCase("-1.2.3")]
    [TestCase("1.-2.3")]
    [TestCase("1.2.x")]
    [TestCase("１.2.3")]
    [TestCase("1.2.3-\u00e9")]
    [TestCase("1.2.3\r\n")]
    [TestCase("raw")]
    public void Parse_RefusesWhatIsNotAVersion(string? text)
    {
        Assert.That(SemanticVersion.TryParse(text, out _), Is.False);
    }

    [Test]
    public void Parse_RefusesTextPastTheLengthCap_EvenWhenWellFormed()
    {
        var longest = "1.0.0-" + new string('a', SemanticVersion.MaxLength - 6);

        Assert.Multiple(() =>
        {
            Assert.That(SemanticVersion.TryParse(longest, out _), Is.True);
            Assert.That(SemanticVersion.TryParse(longest + "a", out _), Is.False);
        });
    }

    [Test]
    public void WithoutAMinimum_EveryAgentIsAccepted_EvenWithoutAVersion()
    {
        var policy = new AgentVersionPolicy((string?)null);

        Assert.Multiple(() =>
        {
            Assert.That(policy.Check("0.0.1"), Is.Null);
            Assert.That(policy.Check(""), Is.Null);
            Assert.That(policy.Check("raw"), Is.Null);
            Assert.That(new AgentVersionPolicy("").Check("raw"), Is.Null, "empty means no minimum");
        });
    }

    [TestCase("2.1.0", true)]
    [TestCase("2.1.0+sha.1234", true)]
    [TestCase("2.1.1", true)]
    [TestCase("10.0.0", true)]
    [TestCase("2.1.0-rc.1", false)]
    [TestCase("2.0.9", false)]
    [TestCase("1.0.0", false)]
    [TestCase("", false)]
    [TestCase("garbage", false)]
    public void WithAMinimum_OlderEmptyOrUnparseableVersionsAreRefused(string agent, bool accepted)
    {
        var refusal = new AgentVersionPolicy("2.1.0").Check(agent);

        Assert.That(refusal is null, Is.EqualTo(accepted));
        if (refusal is not null)
        {
            Assert.Multiple(() =>
            {
                Assert.That(refusal.MinimumVersion, Is.EqualTo("2.1.0"));
                Assert.That(refusal.AgentVersion, Is.EqualTo(agent));
                Assert.That(refusal.Detail, Does.Contain("2.1.0 or later"));
            });
        }
    }

    [Test]
    public void APrereleaseMinimum_AcceptsThatPrereleaseAndLater()
    {
        var policy = new AgentVersionPolicy("2.1.0-rc.2+ci.9");

        Assert.Multiple(() =>
        {
            Assert.That(policy.Check("2.1.0-rc.1"), Is.Not.Null);
            Assert.That(policy.Check("2.1.0-rc.2"), Is.Null);
            Assert.That(policy.Check("2.1.0-rc.10"), Is.Null);
            Assert.That(policy.Check("2.1.0"), Is.Null);
            Assert.That(policy.Check("2.0.0")!.MinimumVersion, Is.EqualTo("2.1.0-rc.2"), "build metadata is not echoed");
        });
    }

    [Test]
    public void Refusal_IsFailedPrecondition_WithTheTrailersTheSdkRecognises()
    {
        var ex = new AgentVersionPolicy("2.1.0").Check("1.0.0")!.ToRpcException();

        Assert.Multiple(() =>
        {
            Assert.That(ex.StatusCode, Is.EqualTo(StatusCode.FailedPrecondition));
            Assert.That(ex.Status.Detail, Is.EqualTo("this relay requires SiteLink SDK 2.1.0 or later; the agent runs 1.0.0"));
            Assert.That(ex.Trailers.GetValue(WireNames.RefusalTrailer), Is.EqualTo("agent-version"));
            Assert.That(ex.Trailers.GetValue(WireNames.MinimumVersionTrailer), Is.EqualTo("2.1.0"));
            Assert.That(ex.Trailers.GetValue(WireNames.AgentVersionTrailer), Is.EqualTo("1.0.0"));
        });
    }

    [Test]
    public void EmptyVersion_IsRefused_AndTheDetailSaysNoneWasGiven()
    {
        var refusal = new AgentVersionPolicy("2.1.0").Check("")!;

        Assert.Multiple(() =>
        {
            Assert.That(refusal.AgentVersion, Is.Empty);
            Assert.That(refusal.Detail, Does.Contain("did not say which version"));
            Assert.That(refusal.ToRpcException().Trailers.GetValue(WireNames.AgentVersionTrailer), Is.Empty);
        });
    }

    // Named, so a 2 MB argument does not become a 2 MB test name.
    private static readonly TestCaseData[] HostileVersions =
    [
        new TestCaseData(new string('9', 2_000_000)).SetArgDisplayNames("2,000,000 digits"),
        new TestCaseData("1.0.0" + new string('x', 100_000)).SetArgDisplayNames("a version and 100,000 more characters"),
        new TestCaseData("0.9.0\r\nsitelink-refusal: none").SetArgDisplayNames("CR LF and a forged trailer"),
        new TestCaseData("\u001b[31m0.9.0\u001b[0m").SetArgDisplayNames("terminal escapes"),
        new TestCaseData("0.9.0\u202e\u0000\u2028").SetArgDisplayNames("bidi override, NUL, line separator"),
        new TestCaseData("\ud83d\ude00 0.9.0 \u00e9\u4e2d").SetArgDisplayNames("non-ASCII letters and an emoji"),
        new TestCaseData(new string('\ud800', 500)).SetArgDisplayNames("500 lone surrogates"),
    ];

    [TestCaseSource(nameof(HostileVersions))]
    public void HostileVersions_AreRefused_AndEchoedOnlyAsCappedPrintableAscii(string hostile)
    {
        var refusal = new AgentVersionPolicy("1.0.0").Check(hostile)!;
        var trailers = refusal.ToRpcException().Trailers;

        Assert.Multiple(() =>
        {
            Assert.That(refusal, Is.Not.Null);
            Assert.That(refusal.AgentVersion.Length, Is.LessThanOrEqualTo(SafeText.MaxIdLength + 3));
            Assert.That(refusal.AgentVersion.All(c => c is >= ' ' and <= '~'), Is.True, refusal.AgentVersion);
            Assert.That(refusal.Detail.All(c => c is >= ' ' and <= '~'), Is.True);
            Assert.That(trailers.GetValue(WireNames.AgentVersionTrailer), Is.EqualTo(refusal.AgentVersion));
            Assert.That(trailers.Count, Is.EqualTo(3), "nothing the agent sent adds a trailer");
        });
    }

    [Test]
    public void AHugeVersion_IsCutTo64CharactersAndMarked()
    {
        var refusal = new AgentVersionPolicy("1.0.0").Check("0." + new string('1', 5000) + ".0")!;

        Assert.That(refusal.AgentVersion, Is.EqualTo("0." + new string('1', 62) + "..."));
    }

    [TestCase("2.1.0")]
    [TestCase("2.1.0-rc.1")]
    [TestCase("2.1.0+build.5")]
    [TestCase("")]
    [TestCase(null)]
    public void Validator_AcceptsAVersionOrNoMinimum(string? minimum)
    {
        var options = RelayOptionsValidatorTests.Valid();
        options.MinimumAgentVersion = minimum;

        Assert.That(RelayOptionsValidator.Validate(options), Is.Empty);
    }

    [TestCase("2.1")]
    [TestCase("v2.1.0")]
    [TestCase("latest")]
    [TestCase(" ")]
    [TestCase("2.1.0-rc.01")]
    public void Validator_RefusesAMinimumThatIsNotAVersion_WithAClearError(string minimum)
    {
        var options = RelayOptionsValidatorTests.Valid();
        options.MinimumAgentVersion = minimum;

        var errors = RelayOptionsValidator.Validate(options);

        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0], Does.StartWith($"Relay:MinimumAgentVersion '{minimum}' is not a semantic version"));
        Assert.That(errors[0], Does.Contain("e.g. 2.1.0"));
    }

    [Test]
    public void Validator_CapsAndCleansTheQuotedValue()
    {
        var options = RelayOptionsValidatorTests.Valid();
        options.MinimumAgentVersion = "2.1.0\n" + new string('x', 500);

        var error = RelayOptionsValidator.Validate(options).Single();

        Assert.Multiple(() =>
        {
            Assert.That(error.Contains('\n', StringComparison.Ordinal), Is.False, "the value cannot break the message's line");
            Assert.That(error.Length, Is.LessThan(400));
        });
    }

    [Test]
    public void TheMinimum_SurvivesTheCopyWithoutSecrets_AndBindsFromConfiguration()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Relay:MinimumAgentVersion"] = "2.1.0" }).Build();

        var options = RelayConfiguration.Load(configuration);

        Assert.Multiple(() =>
        {
            Assert.That(options.MinimumAgentVersion, Is.EqualTo("2.1.0"));
            Assert.That(options.WithoutSecrets().MinimumAgentVersion, Is.EqualTo("2.1.0"), "the relay runs on the copy without secrets");
            Assert.That(new RelayOptions().MinimumAgentVersion, Is.Null, "no minimum by default");
        });
    }
}
