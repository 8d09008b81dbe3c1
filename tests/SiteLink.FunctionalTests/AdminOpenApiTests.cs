using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The admin API's OpenAPI document, as the relay serves it, is the one checked into the repository
/// (docs/admin-api.openapi.json): a change to the API shows in review as a change to that file. After a deliberate
/// change, regenerate it with <c>SITELINK_UPDATE_OPENAPI=1 dotnet test --filter TestCategory=AdminApi</c>.
/// </summary>
[TestFixture]
[Category("AdminApi")]
public sealed class AdminOpenApiTests
{
    private static string CheckedIn => Path.Combine(ProcessRunner.RepositoryRoot, "docs", "admin-api.openapi.json");

    [Test]
    public async Task The_served_OpenAPI_document_is_the_checked_in_one()
    {
        await using var relay = await TestRelay.StartAsync([], AdminClient.Enable);
        // The document is public (it describes the API, not the relay's data); the API itself is not.
        using var anonymous = new AdminClient(relay.Server.AdminUrl!, relay.Server.CertificateSha256, key: null);
        var (status, served, _) = await anonymous.GetAsync("/openapi/v1.json");
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((string)served!["info"]!["title"]!, Is.EqualTo("SiteLink relay admin API"));
        Assert.That(served["paths"]!.AsObject().Select(p => p.Key), Does.Contain("/v1/tokens/{name}/revoke"));

        var text = served.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
        if (Environment.GetEnvironmentVariable("SITELINK_UPDATE_OPENAPI") == "1")
        {
            await File.WriteAllTextAsync(CheckedIn, text);
            Assert.Pass($"wrote {CheckedIn}");
        }

        Assert.That(File.Exists(CheckedIn), $"{CheckedIn} is missing: run with SITELINK_UPDATE_OPENAPI=1 to write it");
        var expected = JsonNode.Parse(await File.ReadAllTextAsync(CheckedIn));
        Assert.That(JsonNode.DeepEquals(served, expected), Is.True,
            "the admin API's OpenAPI document differs from docs/admin-api.openapi.json: if the change is deliberate, run the AdminApi tests with SITELINK_UPDATE_OPENAPI=1 and commit the file");
    }
}
