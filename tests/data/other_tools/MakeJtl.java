// Runs a small JMeter test plan built in code (Debian's JMeter 2.13 cannot load .jmx files:
// its XStream refuses the plan's classes) and writes JMeter's own CSV JTL.
import org.apache.jmeter.control.LoopController;
import org.apache.jmeter.engine.StandardJMeterEngine;
import org.apache.jmeter.protocol.http.sampler.HTTPSamplerProxy;
import org.apache.jmeter.reporters.ResultCollector;
import org.apache.jmeter.testelement.TestElement;
import org.apache.jmeter.testelement.TestPlan;
import org.apache.jmeter.threads.ThreadGroup;
import org.apache.jmeter.timers.ConstantTimer;
import org.apache.jmeter.util.JMeterUtils;
import org.apache.jorphan.collections.HashTree;
import org.apache.jorphan.collections.ListedHashTree;

public class MakeJtl {
    static HTTPSamplerProxy get(String name, int port, String path) {
        HTTPSamplerProxy s = new HTTPSamplerProxy();
        s.setName(name); s.setDomain("127.0.0.1"); s.setPort(port); s.setPath(path);
        s.setMethod("GET"); s.setProtocol("http");
        return s;
    }
    public static void main(String[] args) throws Exception {
        JMeterUtils.setJMeterHome("/usr/share/jmeter");
        JMeterUtils.loadJMeterProperties("/usr/share/jmeter/bin/jmeter.properties");
        JMeterUtils.setProperty("jmeter.save.saveservice.output_format", "csv");
        JMeterUtils.setProperty("jmeter.save.saveservice.url", "true");
        JMeterUtils.setProperty("jmeter.save.saveservice.connect_time", "true");
        JMeterUtils.setProperty("jmeter.save.saveservice.idle_time", "true");
        JMeterUtils.setProperty("jmeter.save.saveservice.print_field_names", "true");
        JMeterUtils.initLocale();
        int port = Integer.parseInt(args[0]);
        int threads = Integer.parseInt(args[2]);
        long seconds = Long.parseLong(args[3]);
        int rampUp = args.length > 4 ? Integer.parseInt(args[4]) : 0;
        LoopController loop = new LoopController();
        loop.setLoops(-1); loop.setFirst(true); loop.initialize();
        ThreadGroup group = new ThreadGroup();
        group.setName("users"); group.setNumThreads(threads); group.setRampUp(rampUp);
        group.setScheduler(true); group.setDuration(seconds); group.setSamplerController(loop);
        ConstantTimer pause = new ConstantTimer();
        pause.setDelay("400");
        TestPlan plan = new TestPlan("loadproof sample");
        HashTree tree = new ListedHashTree();
        HashTree groupTree = tree.add(plan).add(group);
        groupTree.add(get("GET /jmeter", port, "/jmeter"));
        groupTree.add(get("GET closed port", 9, "/refused"));
        groupTree.add(pause);
        ResultCollector out = new ResultCollector();
        out.setFilename(args[1]);
        tree.add(tree.getArray()[0], out);
        StandardJMeterEngine engine = new StandardJMeterEngine();
        engine.configure(tree);
        engine.run();
    }
}
