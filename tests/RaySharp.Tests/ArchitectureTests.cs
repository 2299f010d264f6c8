using System.Xml.Linq;
using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>
/// Dependencies point one way (docs/architecture.md, Dependencies): each project references only what this table
/// allows, and lets see inside it only projects that build on it. A new reference is a design decision: change the
/// table and the doc together.
/// </summary>
public sealed class ArchitectureTests
{
    /// <summary>Each project under src/ and the projects it may reference.</summary>
    private static readonly Dictionary<string, string[]> s_allowed = new(StringComparer.Ordinal)
    {
        ["RaySharp.Common"] = [],
        ["RaySharp.Generators"] = [],
        ["RaySharp.Rpc"] = ["RaySharp.Common"],
        ["RaySharp.ObjectStore"] = ["RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.Gcs"] = ["RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.Raylet"] = ["RaySharp.ObjectStore", "RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.CoreWorker"] = ["RaySharp.ObjectStore", "RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.Node"] = ["RaySharp.Gcs", "RaySharp.Raylet", "RaySharp.CoreWorker", "RaySharp.Autoscaler", "RaySharp.ObjectStore", "RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp"] = ["RaySharp.CoreWorker", "RaySharp.Node", "RaySharp.ObjectStore", "RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.Autoscaler"] = ["RaySharp.Rpc", "RaySharp.Common"],
        ["RaySharp.Cli"] = ["RaySharp.Autoscaler", "RaySharp.Node", "RaySharp.Rpc", "RaySharp.Common", "RaySharp.Bench.Core"],
    };

    /// <summary>Outside src/, projects that may see a component's internals: the tests and the tools that measure or attack the transport.</summary>
    private static readonly string[] s_outsideFriends = ["RaySharp.Tests", "RaySharp.Bench.Transport", "RaySharp.Intruder"];

    private static string SrcDir => Path.Combine(Cli.RepoRoot, "src");

    private static IEnumerable<(string Name, XDocument Project)> Projects() =>
        Directory.GetDirectories(SrcDir).Select(d => Path.Combine(d, Path.GetFileName(d) + ".csproj")).Where(File.Exists)
            .Select(f => (Path.GetFileNameWithoutExtension(f), XDocument.Load(f)));

    private static string AssemblyName(string project, XDocument doc) =>
        doc.Descendants("AssemblyName").FirstOrDefault()?.Value ?? project;

    private static IEnumerable<string> References(XDocument doc) =>
        doc.Descendants("ProjectReference").Select(r => Path.GetFileNameWithoutExtension(r.Attribute("Include")!.Value.Replace('\\', '/')));

    [Fact]
    public void EveryProjectReferencesOnlyWhatTheWrittenDirectionsAllow()
    {
        var projects = Projects().ToList();
        Assert.Equal(s_allowed.Keys.Order(StringComparer.Ordinal), projects.Select(p => p.Name).Order(StringComparer.Ordinal));
        foreach (var (name, doc) in projects)
        {
            var wrong = References(doc).Where(r => !s_allowed[name].Contains(r)).ToList();
            Assert.True(wrong.Count == 0, $"{name} references {string.Join(", ", wrong)}, against the directions in docs/architecture.md (Dependencies)");
        }
    }

    [Fact]
    public void InternalsAreSeenOnlyByProjectsThatBuildOnThem()
    {
        var projects = Projects().ToList();
        var assemblies = projects.ToDictionary(p => AssemblyName(p.Name, p.Project), p => p.Name, StringComparer.Ordinal);
        // Whom each project reaches, directly or through others.
        var reaches = projects.ToDictionary(p => p.Name, p => Closure(p.Name), StringComparer.Ordinal);
        foreach (var (name, doc) in projects)
        {
            foreach (var friend in doc.Descendants("InternalsVisibleTo").Select(i => i.Attribute("Include")!.Value))
            {
                if (s_outsideFriends.Contains(friend)) continue;
                Assert.True(assemblies.TryGetValue(friend, out var friendProject), $"{name} lets {friend} see inside, which is no project of src/");
                Assert.True(reaches[friendProject].Contains(name), $"{name} lets {friendProject} see inside, but {friendProject} does not build on it");
            }
        }
        // And nothing grants internals to everything at once any more.
        Assert.DoesNotContain("RaySharp.Gcs", File.ReadAllText(Path.Combine(Cli.RepoRoot, "Directory.Build.props")), StringComparison.Ordinal);

        HashSet<string> Closure(string project)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var stack = new Stack<string>([project]);
            while (stack.TryPop(out var p))
                foreach (var r in s_allowed.GetValueOrDefault(p, []))
                    if (seen.Add(r)) stack.Push(r);
            return seen;
        }
    }

    /// <summary>
    /// The core worker keeps no process-wide state of its own (docs/architecture.md, "One runtime per process"): what a
    /// process holds hangs off its runtime object. The exceptions, each with its reason: the one static the API reads,
    /// the flow-local of the task running, and caches of what reflection found (the same for every runtime).
    /// </summary>
    private static readonly Dictionary<string, string> s_allowedStatics = new(StringComparer.Ordinal)
    {
        ["CoreWorkerProcess.s_current"] = "the runtime the public API speaks for (Ray's CoreWorkerProcess)",
        ["RunningTask.s_current"] = "flow-local: the task running on this flow, as Ray's worker context is thread-local",
        ["TaskResults.s_readers"] = "typed result readers made once per type by reflection",
        ["TaskResults.s_converters"] = "typed ValueTask converters made once per type by reflection",
        ["FunctionDescriptors.s_cache"] = "the descriptor of a method, made once per MethodInfo",
        ["FunctionDescriptors.s_packed"] = "a descriptor serialized once, as every call carries it",
        ["FunctionDescriptors.s_resolved"] = "what a job's descriptor resolves to in its code, found once by reflection",
        ["FunctionDescriptors.s_resolvedByKey"] = "the same, by the descriptor's key",
    };

    private static readonly Type[] s_stateTypes =
    [
        typeof(System.Collections.Concurrent.ConcurrentDictionary<,>), typeof(Dictionary<,>), typeof(System.Runtime.CompilerServices.ConditionalWeakTable<,>),
        typeof(HashSet<>), typeof(List<>), typeof(Queue<>), typeof(AsyncLocal<>), typeof(ThreadLocal<>),
    ];

    [Fact]
    public void TheCoreWorkerHoldsNoProcessWideStateOutsideItsRuntime()
    {
        var assembly = typeof(CoreWorker.CoreWorkerRuntime).Assembly;
        var found = new List<string>();
        foreach (var type in assembly.GetTypes().Where(t => !t.Name.Contains('<', StringComparison.Ordinal)))
        {
            foreach (var field in type.GetFields(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public
                                                 | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.DeclaredOnly))
            {
                if (field.IsLiteral || type.Namespace?.StartsWith("RaySharp.Rpc", StringComparison.Ordinal) == true) continue;
                // A settable static (a field, or a static property's backing field) is state; so is a readonly one
                // holding a collection or a flow-local.
                var state = !field.IsInitOnly
                    || (field.FieldType.IsGenericType && s_stateTypes.Contains(field.FieldType.GetGenericTypeDefinition()));
                if (!state) continue;
                var name = $"{type.Name}.{field.Name}";
                if (!s_allowedStatics.ContainsKey(name)) found.Add(name);
            }
        }
        Assert.True(found.Count == 0, $"process-wide state in the core worker, outside its runtime object: {string.Join(", ", found)}");
        // And the one static the API reads still exists where this test says.
        Assert.NotNull(typeof(CoreWorker.CoreWorkerProcess).GetField("s_current", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic));
    }
}
