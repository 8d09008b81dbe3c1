using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using SiteLink.ConsoleAgent;

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine(AgentHost.Usage);
    return 0;
}

try
{
    using var host = AgentHost.CreateBuilder(args).Build();
    await host.RunAsync();
    return 0;
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    Console.Error.WriteLine();
    Console.Error.WriteLine(AgentHost.Usage);
    return 2;
}
catch (OptionsValidationException ex)
{
    Console.Error.WriteLine("Invalid SiteLink agent configuration:");
    foreach (var failure in ex.Failures)
    {
        Console.Error.WriteLine($"- {failure}");
    }

    return 2;
}
