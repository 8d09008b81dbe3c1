using System.Reflection;

namespace SiteLink.Sdk.Tests;

[TestFixture]
public sealed class PublicApiTests
{
    private static readonly string[] ForbiddenNamespaces = ["Grpc", "Google.Protobuf", "SiteLink.Protocol"];

    private static IEnumerable<Type> TypesIn(Type type)
    {
        yield return type;
        if (type.HasElementType)
        {
            foreach (var inner in TypesIn(type.GetElementType()!))
            {
                yield return inner;
            }
        }

        foreach (var argument in type.IsGenericType ? type.GetGenericArguments() : [])
        {
            foreach (var inner in TypesIn(argument))
            {
                yield return inner;
            }
        }
    }

    [Test]
    public void PublicSurface_ExposesNoProtobufOrGrpcTypes()
    {
        var offenders = new List<string>();
        foreach (var type in typeof(ITunnelSession).Assembly.GetExportedTypes())
        {
            const BindingFlags visible = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            var signatures = new List<(string Member, Type Type)>();
            if (type.BaseType is not null)
            {
                signatures.Add(("base type", type.BaseType));
            }

            signatures.AddRange(type.GetInterfaces().Select(i => ("interface", i)));
            foreach (var method in type.GetMethods(visible))
            {
                signatures.Add((method.Name, method.ReturnType));
                signatures.AddRange(method.GetParameters().Select(p => (method.Name, p.ParameterType)));
            }

            signatures.AddRange(type.GetProperties(visible).Select(p => (p.Name, p.PropertyType)));
            signatures.AddRange(type.GetFields(visible).Select(f => (f.Name, f.FieldType)));
            foreach (var constructor in type.GetConstructors(visible))
            {
                signatures.AddRange(constructor.GetParameters().Select(p => (".ctor", p.ParameterType)));
            }

            foreach (var (member, signatureType) in signatures)
            {
                foreach (var used in TypesIn(signatureType))
                {
                    if (used.Namespace is { } ns && ForbiddenNamespaces.Any(f => ns == f || ns.StartsWith(f + ".", StringComparison.Ordinal)))
                    {
                        offenders.Add($"{type.FullName}.{member}: {used.FullName}");
                    }
                }
            }
        }

        Assert.That(offenders, Is.Empty);
    }

    [Test]
    [Category("Surface")]
    public void OneEntryType_ConnectAsyncReturnsTheSession_AndTheInterfaceCoversEverythingButSyncDispose()
    {
        var connect = typeof(TunnelSession).GetMethod(nameof(TunnelSession.ConnectAsync))!;
        var concreteOnly = typeof(TunnelSession).GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Select(p => p.Name)
            .Except(typeof(ITunnelSession).GetProperties().Select(p => p.Name))
            .ToArray();

        Assert.Multiple(() =>
        {
            Assert.That(connect.ReturnType, Is.EqualTo(typeof(Task<TunnelSession>)), "like GrpcChannel.ForAddress: the concrete type");
            Assert.That(concreteOnly, Is.Empty, "nothing a caller of the interface cannot reach");
        });
    }

    [Test]
    public void PublicSurface_IsTheDocumentedSetOfTypes()
    {
        var exported = typeof(ITunnelSession).Assembly.GetExportedTypes().Select(t => t.FullName).Order().ToArray();

        Assert.That(exported, Is.EqualTo(new[]
        {
            "Microsoft.Extensions.DependencyInjection.ISiteLinkBuilder",
            "Microsoft.Extensions.DependencyInjection.SiteLinkBuilderExtensions",
            "Microsoft.Extensions.DependencyInjection.SiteLinkServiceCollectionExtensions",
            "SiteLink.BindErrorCode",
            "SiteLink.EndpointOptions",
            "SiteLink.ForwardEndpointOptions",
            "SiteLink.InMemoryConnectionPair",
            "SiteLink.ITunnelConnectionHandler",
            "SiteLink.ITunnelEndpoint",
            "SiteLink.ITunnelListener",
            "SiteLink.ITunnelSession",
            "SiteLink.ProxyProtocolVersion",
            "SiteLink.RelayInfo",
            "SiteLink.TunnelAuthenticationException",
            "SiteLink.TunnelBindEventArgs",
            "SiteLink.TunnelBindException",
            "SiteLink.TunnelConnection",
            "SiteLink.TunnelConnectionEventArgs",
            "SiteLink.TunnelConnectionException",
            "SiteLink.TunnelConnectionHandler",
            "SiteLink.TunnelConnectionInfo",
            "SiteLink.TunnelConnectionOutcome",
            "SiteLink.TunnelDiagnosticReport",
            "SiteLink.TunnelDiagnostics",
            "SiteLink.TunnelDiagnosticStep",
            "SiteLink.TunnelDiagnosticStepKind",
            "SiteLink.TunnelDiagnosticVerdict",
            "SiteLink.TunnelEndpointKind",
            "SiteLink.TunnelError",
            "SiteLink.TunnelException",
            "SiteLink.TunnelPermissionException",
            "SiteLink.TunnelProtocolException",
            "SiteLink.TunnelProxyOptions",
            "SiteLink.TunnelReconnectEventArgs",
            "SiteLink.TunnelReconnectOptions",
            "SiteLink.TunnelRelayDiagnosis",
            "SiteLink.TunnelRelayStatus",
            "SiteLink.TunnelRetryContext",
            "SiteLink.TunnelSession",
            "SiteLink.TunnelSessionExtensions",
            "SiteLink.TunnelSessionOptions",
            "SiteLink.TunnelSessionState",
            "SiteLink.TunnelStateChangedEventArgs",
            "SiteLink.TunnelStream",
            "SiteLink.TunnelVersionException",
            "SiteLink.UpstreamTlsOptions",
        }));
    }
}
