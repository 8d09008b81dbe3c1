using System.Net;
using System.Threading.Channels;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.Protocol.V1;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A relay whose control stream the test drives message by message, to check how the SDK answers requests a
/// real relay would never send (unknown binds, mismatched names). h2c on 127.0.0.1:0.
/// </summary>
internal sealed class ScriptedRelay : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ScriptedRelay(WebApplication app, Uri url, ScriptedControl control)
    {
        _app = app;
        Url = url;
        Control = control;
    }

    public Uri Url { get; }

    public ScriptedControl Control { get; }

    public static async Task<ScriptedRelay> StartAsync()
    {
        var builder = WebApplication.CreateBuilder();
        builder.Logging.ClearProviders();
        var control = new ScriptedControl();
        builder.Services.AddSingleton(control);
        builder.Services.AddGrpc();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        var app = builder.Build();
        app.MapGrpcService<ScriptedTunnelService>();
        await app.StartAsync().DefaultTimeout();
        return new ScriptedRelay(app, new Uri(app.Urls.First()), control);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().DefaultTimeout();
        await _app.DisposeAsync();
    }
}

/// <summary>The agent's messages as they arrive, and a way to send it anything.</summary>
internal sealed class ScriptedControl
{
    public Channel<AgentMessage> FromAgent { get; } = Channel.CreateUnbounded<AgentMessage>();

    public Channel<RelayMessage> ToAgent { get; } = Channel.CreateUnbounded<RelayMessage>();

    /// <summary>When set, every control call is refused with this status (e.g. the relay's answer to another protocol version).</summary>
    public Status? RefuseControlWith { get; set; }

    /// <summary>While false, the relay stops reading the agent's control stream (its HTTP/2 window fills up).</summary>
    public bool Reading { get; set; } = true;

    /// <summary>Stream calls the agent parked: the test writes their first frame.</summary>
    public Channel<ParkedCall> Parked { get; } = Channel.CreateUnbounded<ParkedCall>();

    public async Task<AgentMessage> NextAsync(AgentMessage.KindOneofCase kind)
    {
        while (true)
        {
            var message = await FromAgent.Reader.ReadAsync().AsTask().DefaultTimeout();
            if (message.KindCase == kind)
            {
                return message;
            }
        }
    }
}

/// <summary>A parked Stream call held open by the scripted relay until <see cref="Done"/> completes.</summary>
internal sealed record ParkedCall(IServerStreamWriter<StreamFrame> ToAgent, TaskCompletionSource Done);

internal sealed class ScriptedTunnelService(ScriptedControl control) : Tunnel.TunnelBase
{
    public override async Task Stream(IAsyncStreamReader<StreamFrame> requestStream, IServerStreamWriter<StreamFrame> responseStream, ServerCallContext context)
    {
        var parked = new ParkedCall(responseStream, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        await control.Parked.Writer.WriteAsync(parked);
        try
        {
            await parked.Done.Task.WaitAsync(context.CancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The agent reset the call.
        }
    }

    public override async Task Control(IAsyncStreamReader<AgentMessage> requestStream, IServerStreamWriter<RelayMessage> responseStream, ServerCallContext context)
    {
        if (control.RefuseControlWith is { } refusal)
        {
            throw new RpcException(refusal);
        }

        var writing = Task.Run(async () =>
        {
            await foreach (var message in control.ToAgent.Reader.ReadAllAsync(context.CancellationToken))
            {
                await responseStream.WriteAsync(message);
            }
        });
        await foreach (var message in requestStream.ReadAllAsync(context.CancellationToken))
        {
            await control.FromAgent.Writer.WriteAsync(message);
            while (!control.Reading && !context.CancellationToken.IsCancellationRequested)
            {
                await Task.Delay(20, context.CancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }

        await writing.WaitAsync(TimeSpan.FromSeconds(1)).ContinueWith(_ => { }, TaskScheduler.Default);
    }
}
