using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>A relay built as the standalone relay builds it: from a JSON file it watches (edits apply while it runs).</summary>
internal static class FileRelay
{
    public static async Task<(WebApplication App, X509Certificate2 Certificate)> StartAsync(string path, TestLogSink logs)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = Path.GetDirectoryName(path) });
        builder.Configuration.Sources.Clear();
        builder.Configuration.AddJsonFile(path, optional: false, reloadOnChange: true);
        builder.Logging.ClearProviders();
        logs.AddTo(builder.Logging);
        var certificate = RelayApplication.AddRelay(builder, RelayConfiguration.Load(builder.Configuration))!;
        var app = builder.Build();
        RelayApplication.MapRelay(app);
        await app.StartAsync().DefaultTimeout();
        return (app, certificate);
    }
}
